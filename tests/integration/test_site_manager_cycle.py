"""The whole cycle with the `tapstream` CLI on the two-site stack: protect -> failover test ->
move -> reverse -> failback, byte-identical at each step (qemu-img compare), driven by two real site
managers that run the tappers, VDSAs and journals of the group themselves; then move, reverse and
failback a second time."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from .services_harness import wait_until
from .site_manager_harness import (
    cli_env,
    site_converged,
    start_site_manager,
    tapstream,
    tapstream_json,
)
from .tapper_harness import run

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
SIZE = 16 * MIB


def qemu_io(uri: str, *cmds: str) -> str:
    args = ["qemu-io", "-f", "raw"]
    for cmd in cmds:
        args += ["-c", cmd]
    out = run([*args, uri]).stdout
    assert "fail" not in out.lower(), (
        out
    )  # qemu-io reports a pattern mismatch or I/O error on stdout
    return out


def same(a: str | Path, b: str | Path) -> None:
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(a), str(b)])


def snapshot(uri: str, out: Path) -> Path:
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)])
    return out


def test_protect_failover_test_move_reverse_failback(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    disks = {"disk0": tmp_path / "disk0.img", "disk1": tmp_path / "disk1.img"}
    for p in disks.values():
        with open(p, "wb") as f:
            f.truncate(SIZE)
    # The journal history is long enough that the replica keeps every checkpoint of the test restorable.
    pm = start_site_manager(stack, tmp_path, "protected", [group])
    rm = start_site_manager(stack, tmp_path, "recovery", [group])
    env = cli_env(stack, pm, rm, tmp_path)
    try:
        # --- protect ---------------------------------------------------------------------------
        tapstream(
            env, "group", "create", group, "--journal-history", "60", "--checkpoint-interval", "2"
        )
        for i, (vol, path) in enumerate(disks.items()):
            tapstream(env, "group", "add-vm", group, f"vm{i}", "--target", f"vm{i}-dr")
            tapstream(
                env, "group", "add-volume", group, f"vm{i}", vol, str(path), "--size", str(SIZE)
            )
        status = wait_until(
            "the protected tapper serving",
            lambda: (
                (s := tapstream_json(env, "group", "status", group))["converged"]
                and s.get("exports")
                and all(s["services"].values())
                and s
            ),
            timeout=60,
        )
        assert status["group"]["vms"][0]["target_vm"] == "vm0-dr"
        # The recovery site learns of the group through MirrorMaker 2, a moment later.
        wait_until(
            "the recovery site running the group",
            lambda: site_converged(env, group, "recovery"),
            timeout=60,
        )
        prot = status["exports"]
        qemu_io(prot["disk0"], "write -P 0x11 0 4M")
        qemu_io(prot["disk1"], "write -P 0x22 4M 4M")
        step1 = tapstream(env, "group", "checkpoint", group, "--tag", "step1").stdout.strip()
        at1 = {v: shutil.copyfile(p, tmp_path / f"{v}.step1.img") for v, p in disks.items()}
        wait_until(
            "step1 in the recovery journal",
            lambda: any(
                c["id"] == step1 for c in tapstream_json(env, "group", "checkpoints", group)
            ),
            timeout=60,
        )

        # --- failover test: the checkpoint as NBD exports, writable, replication continues -----
        op = tapstream_json(env, "failover-test", "start", group, "--checkpoint", "step1")
        assert op["status"] == "succeeded" and op["result"]["checkpoint"] == step1, op
        test = {v: op["result"][f"export.{v}"] for v in disks}
        for v in disks:
            same(at1[v], test[v])
        qemu_io(test["disk0"], "write -P 0xee 0 1M", "read -P 0xee 0 1M", "read -P 0x11 1M 3M")
        # nbdsh is `python3 -m nbd` with the distribution's python (libnbd's bindings live there).
        run(
            [
                "/usr/bin/python3",
                "-m",
                "nbd",
                "-u",
                test["disk1"],
                "-c",
                "h.pwrite(b'\\x5a' * 4096, 0)",
                "-c",
                "assert h.pread(4096, 0) == b'\\x5a' * 4096 and h.pread(65536, 4 << 20) == b'\\x22' * 65536",
            ]
        )
        qemu_io(prot["disk0"], "write -P 0x33 8M 1M")  # the protected VM keeps writing meanwhile
        step2 = tapstream(env, "group", "checkpoint", group, "--tag", "step2").stdout.strip()
        wait_until(
            "step2 indexed during the test",
            lambda: any(
                c["id"] == step2 for c in tapstream_json(env, "group", "checkpoints", group)
            ),
            timeout=60,
        )
        shown = tapstream_json(env, "group", "show", group, "--site", "recovery")
        assert shown["failover_test"]["checkpoint_id"] == step1
        tapstream(env, "failover-test", "stop", group)
        assert not (rm.state_dir / "failover-test" / group).exists(), (
            "overlay and scratch images not removed"
        )
        host, port = test["disk0"].removeprefix("nbd://").split("/")[0].split(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(
                (host, int(port)), timeout=2
            ).close()  # the test export is gone
        # The test's writes went to the overlay only: step1 restores unchanged from replica + journal.
        again = tmp_path / "disk0.step1.again.img"
        tapstream(env, "restore", group, "disk0", "--checkpoint", "step1", "--out", str(again))
        same(at1["disk0"], again)

        # --- move: nothing written before it is lost --------------------------------------------
        qemu_io(
            prot["disk1"], "write -P 0x44 12M 2M"
        )  # after the last checkpoint: the move's own cut holds it
        op = tapstream_json(env, "move", group)
        assert op["status"] == "succeeded", op
        rec = {v: op["result"][f"export.{v}"] for v in disks}
        for v, p in disks.items():
            same(p, rec[v])
        qemu_io(rec["disk1"], "read -P 0x44 12M 2M")
        res = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x99 0 64k", prot["disk0"]],
            capture_output=True,
            text=True,
        )
        assert res.returncode != 0 or "fail" in (res.stdout + res.stderr).lower(), (
            "protected side still writable"
        )
        # The recovery site decided the move; `tapstream move` returned once the protected site
        # learned it through MirrorMaker 2.
        g = tapstream_json(env, "group", "show", group)
        assert (g["status"], g["active_site"]) == ("failed_over", "recovery")

        # --- the recovery site runs the VMs; reverse protection; failback -----------------------
        qemu_io(rec["disk0"], "write -P 0x55 2M 3M")
        qemu_io(rec["disk1"], "write -P 0x66 0 1M", "write -z 5M 1M")
        at_recovery = {v: snapshot(rec[v], tmp_path / f"{v}.recovery.img") for v in disks}
        op = tapstream_json(env, "reverse", group)
        assert op["status"] == "succeeded", op
        op = tapstream_json(env, "failback", group)
        assert op["status"] == "succeeded", op
        back = {v: op["result"][f"export.{v}"] for v in disks}
        for v, p in disks.items():
            same(
                at_recovery[v], p
            )  # the original volume holds what was written at the recovery site
            same(at_recovery[v], back[v])
        g = tapstream_json(env, "group", "show", group)
        assert (g["status"], g["active_site"]) == ("protecting", "protected")
        # Protection runs forward again: a new checkpoint restores byte-identical at the recovery site.
        qemu_io(back["disk0"], "write -P 0x77 10M 1M")
        step3 = tapstream(env, "group", "checkpoint", group, "--tag", "step3").stdout.strip()
        wait_until(
            "step3 indexed after failback",
            lambda: any(
                c["id"] == step3 for c in tapstream_json(env, "group", "checkpoints", group)
            ),
            timeout=90,
        )
        for v, p in disks.items():
            out = tmp_path / f"{v}.step3.img"
            tapstream(env, "restore", group, v, "--checkpoint", "step3", "--out", str(out))
            same(p, out)
        # And round again: the recovery site's streams continue where the first round left them.
        op = tapstream_json(env, "move", group)
        assert op["status"] == "succeeded", op
        rec = {v: op["result"][f"export.{v}"] for v in disks}
        for v, p in disks.items():
            same(p, rec[v])
        qemu_io(rec["disk1"], "write -P 0x88 7M 2M")
        at_recovery = {v: snapshot(rec[v], tmp_path / f"{v}.recovery2.img") for v in disks}
        for kind in ("reverse", "failback"):
            op = tapstream_json(env, kind, group)
            assert op["status"] == "succeeded", op
        for v, p in disks.items():
            same(at_recovery[v], p)
        kinds = [o["kind"] for o in tapstream_json(env, "operation", "list") if o["group"] == group]
        assert sorted(kinds) == sorted(
            ["failover-test", "failover-test"] + ["move", "reverse", "failback"] * 2
        ), kinds
    finally:
        codes = (pm.stop(), rm.stop())
    assert codes == (0, 0), "a site manager did not stop cleanly on SIGTERM"


def test_unplanned_failover_then_reverse_sends_only_the_delta(
    stack, tmp_path: Path, unique_name: str
) -> None:
    """Failover to an older checkpoint while the protected side wrote more after it: reverse protection
    undoes those writes with a delta (not a full copy), and failback returns the recovery site's data."""
    group = unique_name
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    # This one leaves its services running when it stops: the data path outlives the control plane.
    pm = start_site_manager(
        stack, tmp_path, "protected", [group], {"TAPSTREAM_SITE_MANAGER_STOP_SERVICES": "false"}
    )
    rm = start_site_manager(stack, tmp_path, "recovery", [group])
    env = cli_env(stack, pm, rm, tmp_path)
    try:
        tapstream(
            env, "group", "create", group, "--journal-history", "60", "--checkpoint-interval", "2"
        )
        tapstream(env, "group", "add-vm", group, "vm0")
        tapstream(env, "group", "add-volume", group, "vm0", "disk0", str(disk))
        prot = wait_until(
            "the protected tapper serving",
            lambda: (
                (s := tapstream_json(env, "group", "status", group))["converged"]
                and all(s["services"].values())
                and s.get("exports")
            ),
            timeout=60,
        )["disk0"]
        pids = tapstream_json(env, "group", "status", group)["pids"]
        assert pm.stop() == 0
        qemu_io(prot, "write -P 0x11 0 8M")  # served while no site manager runs
        pm = start_site_manager(
            stack,
            tmp_path,
            "protected",
            [group],
            {"TAPSTREAM_SITE_MANAGER_PORT": pm.url.rsplit(":", 1)[1]},
        )
        assert "adopted running services" in pm.log.read_text()
        assert (
            wait_until(
                "services adopted",
                lambda: (
                    (s := tapstream_json(env, "group", "status", group))["converged"] and s["pids"]
                ),
                timeout=30,
            )
            == pids
        ), "a service was restarted instead of adopted"
        wait_until(
            "the recovery site running the group",
            lambda: site_converged(env, group, "recovery"),
            timeout=60,
        )
        cp = tapstream(env, "group", "checkpoint", group, "--tag", "good").stdout.strip()
        at_cp = shutil.copyfile(disk, tmp_path / "at-cp.img")
        qemu_io(
            prot, "write -P 0xbd 1M 512k", "write -P 0xbd 12M 64k"
        )  # after the checkpoint: to be undone
        wait_until(
            "the checkpoint in the journal",
            lambda: any(c["id"] == cp for c in tapstream_json(env, "group", "checkpoints", group)),
            timeout=60,
        )
        op = tapstream_json(env, "failover", group, "--checkpoint", "good")
        assert op["status"] == "succeeded" and op["result"]["checkpoint"] == cp, op
        rec = op["result"]["export.disk0"]
        same(at_cp, rec)
        qemu_io(rec, "write -P 0x55 4M 1M")
        op = tapstream_json(env, "reverse", group)
        assert op["status"] == "succeeded", op
        assert int(op["result"]["delta_bytes"]) == 512 * 1024 + 64 * 1024, (
            op
        )  # only what changed, not 16 MiB
        op = tapstream_json(env, "failback", group)
        assert op["status"] == "succeeded", op
        expected = shutil.copyfile(at_cp, tmp_path / "expected.img")
        qemu_io(str(expected), "write -P 0x55 4M 1M")
        same(expected, disk)
        same(expected, op["result"]["export.disk0"])
    finally:
        codes = (pm.stop(), rm.stop())
    assert codes == (0, 0)

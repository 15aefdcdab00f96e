"""End to end on the two-site stack: tapper -> Kafka -> MirrorMaker 2 -> journal + recovery VDSA ->
restore. A volume written by fio with a random pattern is restored at three checkpoints, each
byte-identical to the protected volume at that checkpoint; again after the VDSA is SIGKILLed
mid-apply. Checkpoints are crash-consistent across two volumes."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.replay import read_stream
from tapstream.journal.restore import RestoreError, restore
from tapstream.journal.store import JournalStore
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 32 * 1024 * 1024


def fio(uri: str, seed: int) -> None:
    run(
        [
            "fio",
            "--name=w",
            "--ioengine=nbd",
            f"--uri={uri}",
            "--rw=randwrite",
            "--bsrange=4k-128k",
            "--size=8M",
            f"--offset={seed % 3 * 8}M",
            "--iodepth=8",
            "--refill_buffers",
            f"--randseed={seed}",
            "--verify_state_save=0",
        ]
    )


def checkpoints_indexed(stack, group: str) -> list[dict]:
    async def q() -> list[dict]:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            return await store.checkpoints(group)
        finally:
            await store.stop()

    return asyncio.run(q())


def test_restore_three_checkpoints_and_after_vdsa_sigkill(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    vol = blank_volume(tmp_path, "disk0", SIZE)
    env = {**stack.env, "TAPSTREAM_REPLICA_DIR": str(tmp_path / "replicas")}
    stack.env.update({"TAPSTREAM_REPLICA_DIR": env["TAPSTREAM_REPLICA_DIR"]})
    settings = stack.settings.model_copy(update={"replica_dir": tmp_path / "replicas"})
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    journal = start_service(
        stack, "tapstream.journal", tmp_path, groups_env("JOURNAL", group), "journal"
    )
    # History of a few seconds: the replica advances during the test, so later restores combine
    # replica and journal. It starts after the first three restores, which come from the journal
    # alone: a replica already past a checkpoint refuses it, however slow the machine was.
    vdsa_env = {
        **groups_env("VDSA", group),
        "TAPSTREAM_SITE": "recovery",
        "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "4",
        "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
    }
    vdsa = None
    copies: dict[str, Path] = {}
    try:
        for i in range(3):
            fio(tapper.uri("disk0"), seed=1000 + i)
            cp = asyncio.run(create_checkpoint(settings, group, f"step{i}"))
            copy = tmp_path / f"at-{i}.img"
            shutil.copyfile(vol, copy)  # no writes in flight: the volume is exactly the checkpoint
            copies[cp] = copy
        images = [p.read_bytes() for p in copies.values()]
        assert len({hash(i) for i in images}) == 3 and images[0] != bytes(SIZE), (
            "fio wrote nothing new"
        )
        wait_until("all checkpoints indexed", lambda: len(checkpoints_indexed(stack, group)) == 3)
        for n, (cp, copy) in enumerate(copies.items()):
            out = tmp_path / f"restored-{n}.img"
            res = asyncio.run(restore(settings, group, "disk0", cp, out))
            images_equal(copy, out)
            assert res.events_in_window >= res.events_applied
        # Kill the VDSA while it applies, restart it, restore the newest checkpoint again.
        vdsa = start_service(stack, "tapstream.vdsa", tmp_path, vdsa_env, "vdsa")
        fio(tapper.uri("disk0"), seed=2000)
        asyncio.run(create_checkpoint(settings, group, "after-kill"))
        shutil.copyfile(vol, tmp_path / "at-last.img")
        replica_pos = tmp_path / "replicas" / group / "disk0.pos.json"
        wait_until("the replica applying", replica_pos.exists, timeout=60)
        vdsa.send_signal(signal.SIGKILL)
        vdsa.wait(10)
        vdsa = start_service(stack, "tapstream.vdsa", tmp_path, vdsa_env, "vdsa2")
        wait_until("checkpoint indexed", lambda: len(checkpoints_indexed(stack, group)) == 4)
        out = tmp_path / "restored-last.img"
        asyncio.run(restore(settings, group, "disk0", "after-kill", out))
        images_equal(tmp_path / "at-last.img", out)
        # Once everything aged past the history, the replica alone equals the protected volume.
        replica = tmp_path / "replicas" / group / "disk0.img"
        wait_until(
            "replica converged",
            lambda: (
                replica.exists()
                and replica.stat().st_size == SIZE
                and subprocess.run(
                    ["cmp", "-s", str(replica), str(tmp_path / "at-last.img")]
                ).returncode
                == 0
            ),
            timeout=60,
            interval=1,
        )
        wait_until(
            "the journal learning the replica passed the first checkpoint",
            lambda: not checkpoints_indexed(stack, group)[0]["restorable"],
            timeout=30,
        )
        # Old checkpoints are now behind the replica: a restore says so and leaves no file.
        first = next(iter(copies))
        bad = tmp_path / "too-old.img"
        with pytest.raises(RestoreError, match="outside the journal window"):
            asyncio.run(restore(settings, group, "disk0", first, bad))
        assert not bad.exists() and not (tmp_path / "too-old.img.partial").exists()
        with pytest.raises(RestoreError, match="unknown volume"):
            asyncio.run(restore(settings, group, "nope", "latest", tmp_path / "x.img"))
        # What the operator sees.
        status = json.loads(
            run([sys.executable, "-m", "tapstream.cli.main", "status", "--json"], env=env).stdout
        )
        mine = next(g for g in status if g["group"] == group)
        assert mine["checkpoints"] == 4 and mine["volumes"] == ["disk0"]
        assert mine["applied_seq"]["disk0"] > 0 and mine["last_checkpoint"]["tag"] == "after-kill"
    finally:
        assert tapper.stop() == 0
        stop(journal)
        if vdsa is not None:
            stop(vdsa)


def test_checkpoints_are_crash_consistent_across_two_volumes(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    vols = {"a": blank_volume(tmp_path, "a", SIZE), "b": blank_volume(tmp_path, "b", SIZE)}
    tapper = start_tapper(stack, tmp_path, group, vols)
    # A libnbd writer: counter i to volume a, wait for completion, then i to volume b.
    writer = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            f"""
import nbd, struct
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri("{tapper.uri("a")}"); b.connect_uri("{tapper.uri("b")}")
for i in range(1, 400):
    a.pwrite(struct.pack(">Q", i) * 64, 0)
    b.pwrite(struct.pack(">Q", i) * 64, 0)
""",
        ]
    )
    cps = []
    try:
        while writer.poll() is None:
            cps.append(asyncio.run(create_checkpoint(stack.settings, group)))
        assert writer.returncode == 0
        cps.append(asyncio.run(create_checkpoint(stack.settings, group)))
    finally:
        assert tapper.stop() == 0
    assert len(cps) >= 2
    # Walk each volume's stream: the counter each checkpoint marker sees on a and on b.
    seen: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    current = {"a": 0, "b": 0}
    settings = stack.settings
    for _p, _o, rec in read_stream(
        client_config(settings), settings.topic(f"writes.{group}"), make_codec(settings)
    ):
        kind, body = rec["body"]
        if kind == "Write" and body["offset"] == 0:
            current[rec["volume"]] = int.from_bytes(body["data"][:8], "big")
        elif kind == "Checkpoint":
            seen[rec["volume"]][body["id"]] = current[rec["volume"]]
    for cp in cps:
        assert cp in seen["a"] and cp in seen["b"], f"checkpoint {cp} missing on a volume"
        # b's write i is issued only after a's write i completed: a cut holding b=i must hold a>=i.
        assert seen["a"][cp] >= seen["b"][cp], (cp, seen["a"][cp], seen["b"][cp])
    assert any(seen["b"][cp] > 0 for cp in cps), "no checkpoint fell inside the writes"

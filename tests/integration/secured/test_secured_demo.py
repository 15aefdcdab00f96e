"""The demo's flow on the secured stack: protect a disk through the site managers' HTTPS API with
tokens, write through the tapper with real clients over NBD TLS, checkpoint, restore at the recovery
site with the CLI, and compare bytes. Every process logs in to Kafka as its own principal, and the
brokers hold only the ACL table's grants: if the table misses anything a service does, this fails.

What each wire authenticates here:
  NBD        the tapper requires TLS (X.509, client certificate checked against the CA);
  Kafka      SASL_SSL + SCRAM-SHA-512, one user per service, the StandardAuthorizer;
  REST       HTTPS with bearer tokens (admin protects, operator checkpoints, viewer only reads);
  control    commands signed with the site's key (TAPSTREAM_CONTROL_KEYS).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tapstream.localstack.secured_stack import SecuredSites
from tapstream.site_manager.auth import Role, TokenStore
from tapstream.tapper.volume import create

from ..nbd_certs import make_pki
from ..services_harness import replica_equals, start_service, stop, wait_until
from ..site_manager_harness import start_site_manager, tapstream, tapstream_json
from ..tapper_harness import start_tapper
from .conftest import as_stack

pytestmark = [pytest.mark.integration, pytest.mark.tools, pytest.mark.secured]

GROUP = "secdemo"
SIZE = 64 << 20


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]
    assert res.returncode == 0, f"{cmd[0]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def qemu_io(port: int, pki: Path, command: str) -> None:
    run(
        [
            "qemu-io",
            "--object", f"tls-creds-x509,id=tls0,dir={pki},endpoint=client",
            "--image-opts",
            f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},"
            f"export=disk0,tls-creds=tls0",
            "-c", command,
        ]
    )  # fmt: skip


def test_protect_write_checkpoint_restore_on_the_secured_stack(
    sites: SecuredSites, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    vols = tmp_path / "volumes"
    vols.mkdir()
    vol = vols / "disk0.img"
    create(vol, SIZE)
    replicas = tmp_path / "replicas"

    # --- the control plane: both site managers over HTTPS, tokens by role ------------------------
    https = {
        "TAPSTREAM_SITE_MANAGER_TLS_CERTFILE": str(sites.kafka["protected"].keystore),
        "TAPSTREAM_SITE_MANAGER_TLS_KEYFILE": str(sites.kafka["protected"].keystore),
        # Services run as their own processes and principals (as in Kubernetes), not as children.
        "TAPSTREAM_SITE_MANAGER_RUN_SERVICES": "false",
        "TAPSTREAM_REPLICA_DIR": str(replicas),
    }
    managers = {
        site: start_site_manager(
            as_stack(sites, f"site-manager-{site}"), tmp_path, site, [GROUP], https,
            ca=sites.ca_file,
        )
        for site in ("protected", "recovery")
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = [m.proc for m in managers.values()]
    tapper = None
    try:
        store = TokenStore(tmp_path / "tokens.json")
        operator, viewer = store.issue("ops", Role.OPERATOR), store.issue("audit", Role.VIEWER)
        cli = as_stack(
            sites,
            "cli",
            TAPSTREAM_SITE_MANAGER_PROTECTED_URL=managers["protected"].url,
            TAPSTREAM_SITE_MANAGER_RECOVERY_URL=managers["recovery"].url,
            TAPSTREAM_API_CA_FILE=str(sites.ca_file),
            TAPSTREAM_API_TOKEN=managers["protected"].token,
            TAPSTREAM_REPLICA_DIR=str(replicas),  # restores run beside the recovery VDSA
            # A checkpoint round and its record over SASL_SSL may pass 30 s on a loaded machine.
            TAPSTREAM_SITE_MANAGER_TIMEOUT_S="120",
            COLUMNS="200",
        ).env
        assert managers["protected"].url.startswith("https://")
        tapstream(cli, "group", "create", GROUP, "--checkpoint-interval", "5")
        tapstream(cli, "group", "add-vm", GROUP, "vm0")
        tapstream(cli, "group", "add-volume", GROUP, "vm0", "disk0", str(vol), "--size", str(SIZE))
        # Refusals on the API: no token, a viewer's token for an operator's job, no trusted CA.
        denied = tapstream({**cli, "TAPSTREAM_API_TOKEN": ""}, "group", "list", ok=False)
        assert denied.returncode != 0 and "401" in denied.stdout + denied.stderr
        weak = tapstream(
            {**cli, "TAPSTREAM_API_TOKEN": viewer}, "group", "checkpoint", GROUP, ok=False
        )
        assert weak.returncode != 0 and "403" in weak.stdout + weak.stderr
        system_cas = {k: v for k, v in cli.items() if k != "TAPSTREAM_API_CA_FILE"}
        untrusted = tapstream(system_cas, "group", "list", ok=False)
        assert untrusted.returncode != 0 and "TAPSTREAM_API_CA_FILE" in untrusted.stderr
        as_operator = {**cli, "TAPSTREAM_API_TOKEN": operator}

        # --- the data path: each service its own Kafka principal ---------------------------------
        tapper = start_tapper(
            as_stack(sites, "tapper"), tmp_path, GROUP, {"disk0": vol},
            extra_env={
                "TAPSTREAM_TAPPER_TLS": "require",
                "TAPSTREAM_TAPPER_TLS_CERT": str(pki / "server-cert.pem"),
                "TAPSTREAM_TAPPER_TLS_KEY": str(pki / "server-key.pem"),
                "TAPSTREAM_TAPPER_TLS_CA": str(pki / "ca-cert.pem"),
                "TAPSTREAM_TAPPER_TLS_VERIFY_PEER": "true",
            },
        )  # fmt: skip
        procs.append(tapper.proc)
        groups = json.dumps([GROUP])
        vdsa_recovery = {
            "TAPSTREAM_SITE": "recovery",
            "TAPSTREAM_VDSA_GROUPS": groups,
            "TAPSTREAM_REPLICA_DIR": str(replicas),
        }
        started: dict[str, subprocess.Popen[bytes]] = {}
        for service, env in (
            ("journal", {"TAPSTREAM_SITE": "recovery", "TAPSTREAM_JOURNAL_GROUPS": groups}),
            # An hour of history: the restores below come from the journal (the replica has
            # not moved past their checkpoints).
            ("vdsa-recovery", vdsa_recovery | {"TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "3600"}),
            ("vdsa-protected", {"TAPSTREAM_SITE": "protected", "TAPSTREAM_VDSA_GROUPS": groups}),
            (
                "replicator",
                {
                    "TAPSTREAM_SITE": "recovery",
                    "TAPSTREAM_REPLICATOR_GROUPS": groups,
                    "TAPSTREAM_REPLICATOR_INTERVAL_S": "0.5",
                    "TAPSTREAM_REPLICATOR_SUPERVISE_LOCAL": "false",
                },
            ),
            # faust, as the analyzer's principal: reads the write stream, no control.
            ("analyzer", {"TAPSTREAM_ANALYZER_GROUP": GROUP}),
        ):
            module = "tapstream.vdsa" if "vdsa" in service else f"tapstream.{service}"
            started[service] = start_service(
                as_stack(sites, service), module, tmp_path, env, service
            )
            procs.append(started[service])
        # A plain NBD client is refused (TLS required).
        plain = subprocess.run(
            ["nbdinfo", f"nbd://127.0.0.1:{tapper.port}/disk0"], capture_output=True, timeout=60
        )
        assert plain.returncode != 0

        # --- write, checkpoint, write more, checkpoint --------------------------------------------
        qemu_io(tapper.port, pki, "write -P 0x5a 0 4M")
        qemu_io(tapper.port, pki, "write -P 0xc3 40M 1M")
        before = tapstream(as_operator, "group", "checkpoint", GROUP, "--tag", "before")
        copies = {"before": tmp_path / "at-before.img"}
        shutil.copyfile(vol, copies["before"])  # nothing in flight: the volume at the checkpoint
        src = tmp_path / "src.img"
        src.write_bytes(bytes(range(256)) * (8 << 12))  # 8 MiB
        run(
            [
                "nbdcopy", "--allocated", str(src),
                f"nbds://127.0.0.1:{tapper.port}/disk0?tls-certificates={pki}",
            ]
        )  # fmt: skip
        qemu_io(tapper.port, pki, "write -P 0x77 60M 512k")
        # `checkpoint create` is the same REST call, recorded by the site manager.
        tapstream(as_operator, "checkpoint", "create", GROUP, "--tag", "after")
        copies["after"] = tmp_path / "at-after.img"
        shutil.copyfile(vol, copies["after"])
        assert before.stdout.strip()

        # --- the recovery site: journal, replica, restore with the CLI's principal ----------------
        def tags() -> set[str]:
            rows = tapstream_json(cli, "group", "checkpoints", GROUP, "--site", "recovery")
            return {r["tag"] for r in rows if r.get("tag")}

        wait_until(
            "both tags in the recovery site's journal", lambda: tags() >= {"before", "after"}, 180
        )
        for tag, copy in copies.items():
            out = tmp_path / f"restored-{tag}.img"
            restore = ("restore", GROUP, "disk0", "--checkpoint", tag, "--out", str(out))

            def attempt(r: tuple[str, ...] = restore) -> subprocess.CompletedProcess[str] | None:
                """None while the journal is still indexing the writes under the tag."""
                res = tapstream(cli, *r, ok=False)
                return (
                    None if res.returncode and "retry shortly" in res.stdout + res.stderr else res
                )

            done = wait_until(f"the journal to hold the writes under {tag}", attempt, 120)
            assert isinstance(done, subprocess.CompletedProcess) and done.returncode == 0, done
            run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(copy), str(out)])
        # The recovery VDSA again, applying at once: the replica catches up to the volume.
        stop(started["vdsa-recovery"], timeout=90)  # over SASL_SSL a stop once took 30 s
        procs.append(
            start_service(
                as_stack(sites, "vdsa-recovery"), "tapstream.vdsa", tmp_path,
                vdsa_recovery | {"TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "0"}, "vdsa-recovery-2",
            )
        )  # fmt: skip
        replica = replicas / GROUP / "disk0.img"
        wait_until(
            "the replica to equal the volume", lambda: replica_equals(replica, copies["after"]), 180
        )

        # The operator's read tools log in as the CLI's principal too: status (with the
        # replicator's RPO), the analyzer's progress, tail.
        def status() -> object:
            rows = [g for g in tapstream_json(cli, "status") if g["group"] == GROUP]
            return rows and rows[0]["checkpoints"] >= 2 and rows[0]["rpo_s"] is not None and rows

        wait_until("status with checkpoints and the replicator's RPO", status, 120)

        def analyzed() -> object:
            rows = tapstream_json(cli, "analyze", "list", GROUP)
            return [r for r in rows if r["analyzer"] == "encryption" and r["lag"] == 0]

        wait_until("the encryption analyzer to have read every write", analyzed, 180)
        tail = tapstream(cli, "tail", f"tapstream.writes.{GROUP}", "--limit", "3")
        assert len([line for line in tail.stdout.splitlines() if line.strip()]) >= 3, tail.stdout
    finally:
        # All at once (each stops cleanly on SIGTERM; on a loaded machine one may take 30 s).
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            stop(p, timeout=90)

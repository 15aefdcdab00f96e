"""`make demo`: the main job, end to end on the local two-site stack.

Protect a disk, put a real ext4 on it through the tapper, checkpoint "before", mount it through the
tapper with no kernel module (nbdfuse + fuse2fs) and change files, raw writes with fio, checkpoint
"after", restore both checkpoints at the recovery site, prove each restore byte-identical to the
protected volume at that checkpoint (qemu-img compare) and clean (e2fsck -fn).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tapstream.core.ports import free_port
from tapstream.core.settings import TapstreamSettings, load
from tapstream.localstack import LocalStackSettings, Stack

console = Console()
REPO = Path(__file__).resolve().parents[3]
VOLUME_SIZE = 256 * 1024 * 1024
FS_SIZE = 192 * 1024 * 1024  # the rest of the volume takes raw writes from fio


def sh(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise SystemExit(
            f"demo: `{' '.join(cmd)}` failed ({res.returncode}):\n{res.stdout[-1500:]}{res.stderr[-1500:]}"
        )
    return res


def daemon(log: Path, *cmd: str) -> subprocess.Popen[bytes]:
    """Start a FUSE server (nbdfuse, fuse2fs -f) in the background, its output to a file."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def unmount(path: Path) -> None:
    """root unmounts FUSE with umount; others need fusermount3 (Debian package fuse3)."""
    sh("umount", str(path)) if os.geteuid() == 0 else sh("fusermount3", "-u", str(path))


def step(msg: str) -> None:
    console.print(f"[bold cyan]▸[/] {msg}")


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"demo: timed out waiting for {what}; see the logs under the demo folder")


class Services:
    procs: dict[str, subprocess.Popen[bytes]]

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, module: str, extra: dict[str, str]) -> None:
        out = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module], env={**self.env, **extra}, stdout=out, stderr=out
        )

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                console.print(f"[yellow]{name} did not stop in 30 s; killed[/]")


def main() -> None:
    for tool in ("qemu-img", "nbdcopy", "nbdfuse", "fuse2fs", "mkfs.ext4", "e2fsck", "fio", "kcat"):
        if shutil.which(tool) is None:
            raise SystemExit(f"demo: {tool} is missing; run `make system-deps` (as root) first")
    t_start = time.monotonic()
    local = load(LocalStackSettings)
    stack = Stack(local)
    step("bringing up both sites (Kafka x2, MirrorMaker 2, Postgres x2)")
    stack.up()
    group = f"demo-{time.strftime('%H%M%S')}"
    work = stack.root / "demo" / group
    work.mkdir(parents=True)
    env = {
        **os.environ,
        **stack.env(),
        "TAPSTREAM_ENV_FILE": str(stack.root / "local.env"),
        "TAPSTREAM_REPLICA_DIR": str(stack.root / "replicas"),
        "TAPSTREAM_LOG_LEVEL": "INFO",
    }
    settings = load(TapstreamSettings).model_copy(update={"replica_dir": stack.root / "replicas"})
    vol = work / "disk0.img"
    _create(vol)
    port = free_port()
    svc = Services(env, work)
    mounts: list[Path] = []
    try:
        step(f"starting the tapper (sync mode), journal and recovery VDSA for group {group}")
        svc.start(
            "tapper",
            "tapstream.tapper",
            {
                "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                    [{"name": "disk0", "path": str(vol), "group": group, "mode": "sync"}]
                ),
                "TAPSTREAM_TAPPER_LISTEN_PORT": str(port),
                "TAPSTREAM_TAPPER_STATE_DIR": str(work / "tapper"),
            },
        )
        svc.start("journal", "tapstream.journal", {"TAPSTREAM_JOURNAL_GROUPS": json.dumps([group])})
        svc.start(
            "vdsa-recovery",
            "tapstream.vdsa",
            {
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_VDSA_GROUPS": json.dumps([group]),
                # Ten minutes of history: both checkpoints stay restorable however long the
                # filesystem steps take here (the replica applies what is older).
                "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "600",
            },
        )
        # Measures RPO across MirrorMaker 2 twice a second and records it on tapstream.progress.
        svc.start(
            "replicator",
            "tapstream.replicator",
            {
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_REPLICATOR_GROUPS": json.dumps([group]),
                "TAPSTREAM_REPLICATOR_INTERVAL_S": "0.5",
                "TAPSTREAM_REPLICATOR_SUPERVISE_LOCAL": "false",
            },
        )
        svc.start(
            "vdsa-protected",
            "tapstream.vdsa",
            {
                "TAPSTREAM_SITE": "protected",
                "TAPSTREAM_VDSA_GROUPS": json.dumps([group]),
                "TAPSTREAM_VDSA_CHECKPOINT_INTERVAL_S": "5",
            },
        )
        uri = f"nbd://127.0.0.1:{port}/disk0"
        wait_for(
            "the tapper to listen",
            lambda: subprocess.run(["nbdinfo", "--size", uri], capture_output=True).returncode == 0,
        )

        step(
            "making an ext4 filesystem from this repository's sources and writing it through the tapper (nbdcopy)"
        )
        src = work / "src"
        shutil.copytree(REPO / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(
            REPO / "services", src / "services", ignore=shutil.ignore_patterns("__pycache__")
        )
        fs = work / "fs.img"
        with open(fs, "wb") as f:
            f.truncate(FS_SIZE)
        sh("mkfs.ext4", "-q", "-F", "-d", str(src), "-L", "tapstream", str(fs))
        sh("nbdcopy", str(fs), uri)
        before = checkpoint(settings, group, "before", vol, work)

        step(
            "mounting the ext4 through the tapper (nbdfuse + fuse2fs, no kernel module) and changing files"
        )
        nbd_mnt, fs_mnt = work / "nbd", work / "mnt"
        nbd_mnt.mkdir()
        fs_mnt.mkdir()
        fuse = [
            daemon(
                work / "nbdfuse.log", "nbdfuse", "-P", str(work / "nbdfuse.pid"), str(nbd_mnt), uri
            )
        ]
        mounts.append(nbd_mnt)
        wait_for("nbdfuse", lambda: (work / "nbdfuse.pid").exists() and (nbd_mnt / "nbd").exists())
        fuse.append(
            daemon(
                work / "fuse2fs.log",
                "fuse2fs",
                "-f",
                str(nbd_mnt / "nbd"),
                str(fs_mnt),
                "-o",
                "fakeroot",
            )
        )
        mounts.insert(0, fs_mnt)
        wait_for("fuse2fs", lambda: os.path.ismount(fs_mnt) and (fs_mnt / "lib").exists())
        shutil.rmtree(fs_mnt / "services" / "tapper")
        (fs_mnt / "NOTES.txt").write_text("written through the tapper\n" * 1000)
        (fs_mnt / "random.bin").write_bytes(os.urandom(8 << 20))
        with open(fs_mnt / "lib" / "tapstream" / "core" / "settings.py", "a") as f:
            f.write("# changed by the demo\n")
        # Inner mount first; each FUSE server flushes to the tapper and exits once unmounted.
        for m, proc in ((fs_mnt, fuse[1]), (nbd_mnt, fuse[0])):
            unmount(m)
            mounts.remove(m)
            proc.wait(60)

        step("raw writes past the filesystem with fio (random data, 16 MiB)")
        sh(
            "fio",
            "--name=raw",
            "--ioengine=nbd",
            f"--uri={uri}",
            "--rw=randwrite",
            "--bs=64k",
            f"--offset={FS_SIZE}",
            "--size=16M",
            "--iodepth=16",
            "--refill_buffers",
            "--verify_state_save=0",
        )
        after = checkpoint(settings, group, "after", vol, work)

        step("waiting for the recovery site to index both checkpoints (MirrorMaker 2 -> journal)")
        t_cp = time.monotonic()
        wait_for("the journal", lambda: indexed(settings, group) >= {"before", "after"})
        rpo_seen = time.monotonic() - t_cp

        rows = []
        for tag, copy in (("before", before), ("after", after)):
            out = work / f"restored-{tag}.img"
            step(f"restoring checkpoint '{tag}' at the recovery site")
            t0 = time.monotonic()
            sh(
                sys.executable,
                "-m",
                "tapstream.cli.main",
                "restore",
                group,
                "disk0",
                "--checkpoint",
                tag,
                "--out",
                str(out),
                env=env,
            )
            secs = time.monotonic() - t0
            sh("qemu-img", "compare", "-f", "raw", "-F", "raw", str(copy), str(out))
            fsck = sh("e2fsck", "-fn", str(out))
            rows.append(
                (tag, "identical", "clean" if fsck.returncode == 0 else "errors", f"{secs:.2f}")
            )
        stats = journal_stats(settings, group)
        rpo = rpo_samples(settings, group)
    finally:
        for m in mounts:
            with contextlib.suppress(SystemExit):
                unmount(m)
        svc.stop_all()

    table = Table(title=f"tapstream demo — group {group}")
    for col in ("checkpoint", "qemu-img compare", "e2fsck -fn", "restore s"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    summary = Table(show_header=False, title="summary")
    summary.add_row("bytes written through the tapper", f"{stats['bytes']:,}")
    summary.add_row("events in the journal", f"{stats['events']:,}")
    summary.add_row("checkpoints (automatic + tagged)", str(stats["checkpoints"]))
    if rpo:
        summary.add_row(
            "RPO seen by the replicator (max / median)",
            f"{max(rpo):.2f} s / {sorted(rpo)[len(rpo) // 2]:.2f} s ({len(rpo)} samples)",
        )
    else:
        summary.add_row("RPO seen by the replicator", "no sample (see replicator.log)")
    summary.add_row("wait for both checkpoints at the recovery site", f"{rpo_seen:.2f} s")
    summary.add_row("total demo time", f"{time.monotonic() - t_start:.1f} s")
    console.print(summary)
    p, r = stack.bootstrap("protected"), stack.bootstrap("recovery")
    print(
        "\nLook at the topics yourself:\n"
        f"  kcat -b {p} -L                                   # brokers and topics (protected)\n"
        f"  kcat -b {p} -C -t tapstream.writes.{group} -e -f '%k seq@%o %S bytes\\n'\n"
        f"  kcat -b {r} -C -t protected.tapstream.writes.{group} -e -c 5   # mirrored (recovery)\n"
        f"  .venv/bin/tapstream tail tapstream.writes.{group} --limit 5   # decoded\n"
        f"  .venv/bin/tapstream checkpoint list {group}\n"
        f"Everything is in {work}; `make down` stops the stack."
    )


def _create(path: Path) -> None:
    from tapstream.tapper.volume import create

    create(path, VOLUME_SIZE)


def checkpoint(settings: TapstreamSettings, group: str, tag: str, vol: Path, work: Path) -> Path:
    from tapstream.vdsa.coordinator import create_checkpoint

    step(f"checkpoint '{tag}' (crash-consistent cut agreed with the tapper)")
    cp = asyncio.run(create_checkpoint(settings, group, tag))
    copy = work / f"protected-at-{tag}.img"
    shutil.copyfile(vol, copy)  # no writes in flight: this is the volume at the checkpoint
    console.print(f"  checkpoint {cp}; protected copy kept as {copy.name}")
    return copy


def _query(settings: TapstreamSettings, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    async def q() -> list[Any]:
        conn = await asyncpg.connect(settings.recovery_database_url.get_secret_value())
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    try:
        return asyncio.run(q())
    except Exception:  # the journal creates the tables on start
        return []


def indexed(settings: TapstreamSettings, group: str) -> set[str]:
    return {
        r["tag"]
        for r in _query(settings, "select tag from journal_checkpoints where group_name=$1", group)
        if r["tag"]
    }


def journal_stats(settings: TapstreamSettings, group: str) -> dict[str, int]:
    ev = _query(
        settings,
        "select count(*) n, coalesce(sum(len) filter (where kind in ('Write','SyncBlock')),0) b "
        "from journal_events where group_name=$1",
        group,
    )
    cps = _query(
        settings, "select count(distinct id) n from journal_checkpoints where group_name=$1", group
    )
    return {"events": ev[0]["n"], "bytes": int(ev[0]["b"]), "checkpoints": cps[0]["n"]}


def rpo_samples(settings: TapstreamSettings, group: str) -> list[float]:
    """The RPO figures the replicator published for `group` during the demo (tapstream.progress at
    the recovery site)."""
    from tapstream.core.codec import make_codec
    from tapstream.core.kafka import client_config
    from tapstream.core.replay import read_stream

    conf = client_config(settings, settings.recovery_bootstrap)
    return [
        rec["rpo_seconds"]
        for _p, _o, rec in read_stream(conf, settings.topic("progress"), make_codec(settings))
        if rec["group"] == group and rec["source"] == "replicator"
    ]


if __name__ == "__main__":
    main()

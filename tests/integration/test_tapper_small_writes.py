"""Writes of any size: an ext4 in userspace (nbdfuse + fuse2fs, no kernel module) through the tapper
makes thousands of small, unaligned metadata updates; every file creation, rename and fsync
succeeds, and the journal's restore at a checkpoint equals the volume byte for byte."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tapstream.journal.restore import restore
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 64 * 1024 * 1024
FILES = 2000


def daemon(log: Path, *cmd: str) -> subprocess.Popen[bytes]:
    """A FUSE server in the foreground of its own process, its output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_fuse2fs_small_writes_all_succeed_and_restore_is_exact(
    stack, tmp_path: Path, unique_name: str
) -> None:
    for tool in ("nbdfuse", "fuse2fs", "mkfs.ext4", "e2fsck"):
        assert shutil.which(tool), f"{tool} is missing: `make system-deps` installs it"
    group = unique_name
    vol = blank_volume(tmp_path, "disk0", SIZE)
    settings = stack.settings
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    journal = start_service(
        stack, "tapstream.journal", tmp_path, groups_env("JOURNAL", group), "journal"
    )
    nbd_dir, fs_dir = tmp_path / "nbd", tmp_path / "mnt"
    nbd_dir.mkdir()
    fs_dir.mkdir()
    fuse: list[subprocess.Popen[bytes]] = []
    try:
        # Block sizes as a strict client learns them: byte-granular reads and writes are served.
        probe = run(
            [
                "/usr/bin/python3",
                "-m",
                "nbd",
                "-u",
                tapper.uri("disk0"),
                "-c",
                "print(h.get_block_size(nbd.SIZE_MINIMUM)); h.pwrite(b'abc', 1001); "
                "print(h.pread(5, 1000).hex())",
            ]
        ).stdout.split()
        assert probe == ["1", "00616263" + "00"]
        log = tmp_path / "fuse.log"
        fuse.append(daemon(log, "nbdfuse", str(nbd_dir), tapper.uri("disk0")))
        wait_until("nbdfuse", lambda: (nbd_dir / "nbd").exists())
        run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-E", "nodiscard", str(nbd_dir / "nbd")])
        fuse.append(
            daemon(log, "fuse2fs", "-f", str(nbd_dir / "nbd"), str(fs_dir), "-o", "fakeroot")
        )
        wait_until("fuse2fs", lambda: os.path.ismount(fs_dir))
        # Small files, each written, fsynced, renamed, and the directory fsynced: every call must
        # succeed (an EIO from a refused unaligned write raises here).
        d = os.open(fs_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(FILES):
                tmp = fs_dir / f".f{i}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, f"file {i} {'x' * (i % 97)}\n".encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, fs_dir / f"f{i}")
                if i % 50 == 0:
                    os.fsync(d)
        finally:
            os.close(d)
        assert len(list(fs_dir.glob("f*"))) == FILES
        assert (fs_dir / "f1234").read_text() == f"file 1234 {'x' * (1234 % 97)}\n"
        for m in (fs_dir, nbd_dir):
            unmount(m)
        for p in reversed(fuse):
            p.wait(60)
        cp = asyncio.run(create_checkpoint(settings, group, "after-small-writes"))
        at = tmp_path / "at.img"
        shutil.copyfile(vol, at)  # nothing in flight: the volume is exactly the checkpoint
        restored = tmp_path / "restored.img"
        wait_until("the checkpoint in the journal", lambda: _restorable(stack, group, cp))
        asyncio.run(restore(settings, group, "disk0", cp, restored))
        images_equal(at, restored)
        run(["e2fsck", "-fn", str(restored)])
    finally:
        for m in (fs_dir, nbd_dir):
            unmount(m)
        for p in fuse:
            if p.poll() is None:
                p.kill()
        assert tapper.stop() == 0
        stop(journal)


def _restorable(stack, group: str, cp: str) -> bool:
    from tapstream.journal.store import JournalStore

    async def q() -> bool:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            return any(c["id"] == cp for c in await store.checkpoints(group))
        finally:
            await store.stop()

    return asyncio.run(q())

"""The filesystem of a checkpoint view, opened without a kernel module: nbdfuse shows the view as a
file (nbdkit runs under it on a pipe, `-s`, so no port is opened), and fuse2fs mounts the ext2/3/4 in
that file read-only. A checkpoint is crash-consistent: if the filesystem's journal needs recovery,
e2fsck replays it first into nbdkit's cow filter (in memory and a temporary file, never the view),
so files whose metadata was still in the journal at the checkpoint are there too.

libguestfs (guestfish, which also reads xfs, btrfs, ntfs and LVM) is not in this machine's packages;
see the README's recovery section.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings
from tapstream.instant.view import PLUGIN, close_orphaned_files_views, close_views

_log = get_logger("tapstream.instant.files")
_MOUNTS = itertools.count(1)


class FilesystemError(RuntimeError):
    """The view's filesystem could not be opened; the message says why."""


def _wait(
    what: str, ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready():
            return
        for p in procs:
            if p.poll() is not None:
                raise FilesystemError(f"{what} exited ({p.returncode}): {log.read_text()[-1500:]}")
        time.sleep(0.05)
    raise FilesystemError(f"{what} not ready within 60 s: {log.read_text()[-1500:]}")


def _unmount(path: Path, lazy: bool = False) -> None:
    if os.geteuid() == 0:
        cmd = ["umount", *(["-l"] if lazy else []), str(path)]
    else:
        cmd = ["fusermount3", "-uz" if lazy else "-u", str(path)]
    subprocess.run(cmd, capture_output=True)


def _stop(p: subprocess.Popen[bytes]) -> None:
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def needs_recovery(image: Path) -> bool:
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
    if out.returncode != 0:
        raise FilesystemError(f"no ext2/3/4 filesystem at the checkpoint: {out.stderr.strip()}")
    features = next(
        (ln for ln in out.stdout.splitlines() if ln.startswith("Filesystem features")), ""
    )
    return "needs_recovery" in features


@contextlib.contextmanager
def mounted(
    settings: TapstreamSettings,
    group: str,
    volume: str,
    checkpoint: str,
    mountpoint: Path | None = None,
) -> Iterator[Path]:
    """The volume's filesystem at `checkpoint`, mounted read-only (at `mountpoint`, or a temporary
    directory) for the duration of the block; everything is unmounted and closed after it."""
    import asyncio

    from tapstream.instant.view import open_view

    # One owner per mount (two checkpoints of one volume can be open at once: `files diff`).
    owner = f"files-{os.getpid()}-{next(_MOUNTS)}"
    for name in close_orphaned_files_views(settings, group):
        _log.warning("closed the view of a `tapstream files` that was killed", session=name)
    with tempfile.TemporaryDirectory(prefix="tapstream-files-") as tmp:
        work = Path(tmp)
        spec = asyncio.run(open_view(settings, group, volume, checkpoint, work / "view", owner))
        nbd_dir, fs_dir = work / "nbd", mountpoint or work / "fs"
        nbd_dir.mkdir()
        fs_dir.mkdir(exist_ok=True)
        log = work / "fuse.log"
        procs: list[subprocess.Popen[bytes]] = []
        mounts: list[Path] = []
        try:
            with open(log, "ab") as out:
                procs.append(
                    subprocess.Popen(
                        ["nbdfuse", "-P", str(work / "nbdfuse.pid"), str(nbd_dir),
                         "--command", "nbdkit", "-s", "--exit-with-parent", "--filter=cow",
                         "python", str(PLUGIN), f"spec={spec}"],
                        stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            mounts.append(nbd_dir)
            image = nbd_dir / "nbd"
            _wait("nbdfuse", lambda: (work / "nbdfuse.pid").exists() and image.exists(), procs, log)
            if needs_recovery(image):
                # Exit code 1: the journal was replayed (filesystem corrected); 0: nothing to do.
                rc = subprocess.run(
                    ["e2fsck", "-E", "journal_only", "-y", str(image)], capture_output=True
                ).returncode
                if rc not in (0, 1):
                    raise FilesystemError(
                        f"replaying the filesystem's journal failed (e2fsck {rc})"
                    )
            with open(log, "ab") as out:
                procs.append(
                    subprocess.Popen(
                        ["fuse2fs", "-f", str(image), str(fs_dir), "-o", "ro,fakeroot"],
                        stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            mounts.insert(0, fs_dir)
            _wait("fuse2fs", lambda: os.path.ismount(fs_dir), procs, log)
            yield fs_dir
        finally:
            # The inner mount first, and its server gone before the next unmount: fuse2fs keeps
            # the image under nbdfuse's mount open until it exits, so that unmount could fail
            # busy, and nbdfuse, never unmounted, was killed after 30 s and left a dead mount
            # the temporary directory could not be removed through (ENOTCONN, seen in CI).
            for m, p in zip(mounts, reversed(procs), strict=False):
                _unmount(m)
                _stop(p)
            for p in procs:  # (each was started with its mount: none is left here)
                _stop(p)
            for m in mounts:  # whatever is still mounted (a server that died): detach it
                _unmount(m, lazy=True)
            close_views(settings, group, owner)

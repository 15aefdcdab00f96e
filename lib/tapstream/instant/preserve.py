"""Preserve sessions: while a checkpoint view is open on a replica, the recovery VDSA copies what it
is about to overwrite aside first, so the view keeps reading the replica as it was when it opened and
replication goes on behind it.

On disk, one directory per open view: `<replica_dir>/<group>/<volume>.views/<name>/` with `data` (the
old bytes, appended) and `index` (24-byte records: start, end, position in `data`). Both sides hold
the replica's lock to create or remove a session and to preserve-then-apply, so the VDSA never
writes a replica byte before its old content and its index record are written (the page cache is
shared: the view sees them at once). Only the first overwrite of a byte is kept. If a session cannot
be written (a full disk) the VDSA marks it broken and goes on: the index's mode becomes 0o400 (a
chmod needs no free block, and the view learns it from the fstat it makes anyway) and `broken` says
why where it can; the view then fails its reads with EIO: visibly broken, never quietly wrong.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
import time
from pathlib import Path

from tapstream.instant.extents import Extents

RECORD = struct.Struct("<QQQ")
CHUNK = 8 << 20
ZEROS = bytes(CHUNK)
BROKEN_MODE = 0o400  # the index's mode once the session is broken (a live one is 0o644)
DATA_BRANCHES = ("Write", "Zero", "SyncBlock")


def sessions_dir(image: Path) -> Path:
    """Where the sessions of the replica image `<volume>.img` live."""
    return image.with_name(image.name.removesuffix(".img") + ".views")


def create(image: Path, name: str) -> Path:
    """A new, empty session (call under the replica's lock, where the position was read)."""
    path = sessions_dir(image) / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "data").touch(0o644)
    (path / "index").touch(0o644)
    os.chmod(path / "index", 0o644)  # whatever the umask: BROKEN_MODE must differ from it
    return path


def remove(path: Path) -> None:
    """End a session (call under the replica's lock, so no apply is half-way through it)."""
    shutil.rmtree(path, ignore_errors=True)


def _decode(raw: bytes) -> list[tuple[int, int, int]]:
    return [
        RECORD.unpack_from(raw, i) for i in range(0, len(raw) - len(raw) % RECORD.size, RECORD.size)
    ]


class SessionReader:
    """The view's side: follows the index as the VDSA appends to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.map = Extents()
        self.index_fd = os.open(path / "index", os.O_RDONLY | os.O_CLOEXEC)
        self.data_fd = os.open(path / "data", os.O_RDONLY | os.O_CLOEXEC)
        self.consumed = 0

    def refresh(self) -> list[tuple[int, int, int]]:
        """Ranges preserved since the last call; OSError(EIO) once the session is broken."""
        st = os.fstat(self.index_fd)  # one syscall per replica read: this is the read path
        if st.st_mode & 0o777 == BROKEN_MODE:
            try:
                reason = (self.path / "broken").read_text(errors="replace")
            except OSError:
                reason = "the VDSA could not copy aside what it overwrote (a full disk?)"
            raise OSError(errno.EIO, f"preserve session broken: {reason}")
        size = st.st_size
        whole = size - size % RECORD.size
        if whole <= self.consumed:
            return []
        raw = os.pread(self.index_fd, whole - self.consumed, self.consumed)
        self.consumed += len(raw)
        added: list[tuple[int, int, int]] = []
        for start, end, pos in _decode(raw):
            added += self.map.fill(start, end, pos)
        return added

    def close(self) -> None:
        os.close(self.index_fd)
        os.close(self.data_fd)


class _Writer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.map = Extents()
        self.data_fd = os.open(path / "data", os.O_WRONLY | os.O_CLOEXEC)
        self.index_fd = os.open(path / "index", os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        size = os.fstat(self.index_fd).st_size
        # A tail past the last index record is unreferenced: appending after it is harmless; the
        # zeros skipped at the end are referenced but not written: appending after them too.
        self.data_end = os.fstat(self.data_fd).st_size
        for start, end, pos in _decode(os.pread(self.index_fd, size, 0)):
            self.map.fill(start, end, pos)
            self.data_end = max(self.data_end, pos + end - start)
        self.broken = os.fstat(self.index_fd).st_mode & 0o777 == BROKEN_MODE

    def keep(self, fd: int, start: int, end: int) -> None:
        if self.broken:
            return
        records = []
        try:
            for a, b in self.map.gaps(start, end):
                # In chunks (a Zero may span the whole disk); zeros are skipped over, leaving a
                # hole in `data` that reads as zeros too.
                for at in range(a, b, CHUNK):
                    n = min(CHUNK, b - at)
                    old = os.pread(fd, n, at)
                    if old != ZEROS[: len(old)] and os.pwrite(
                        self.data_fd, old, self.data_end
                    ) != len(old):
                        raise OSError(errno.EIO, "short write")
                    # Past the replica's end (a short read) it reads as zeros: so does the hole.
                    records.append((at, at + n, self.data_end))
                    self.data_end += n
            if records:
                os.write(self.index_fd, b"".join(RECORD.pack(*r) for r in records))
        except OSError as exc:
            try:
                os.fchmod(self.index_fd, BROKEN_MODE)
            except OSError:
                raise exc from None  # cannot even say so: the VDSA must not write the replica
            self.broken = True
            with contextlib.suppress(OSError):  # the reason, where a block is left for it
                (self.path / "broken").write_text(exc.strerror or repr(exc))
            return
        for r in records:
            self.map.fill(*r)

    def close(self) -> None:
        os.close(self.data_fd)
        os.close(self.index_fd)


class Preserver:
    """The recovery VDSA's side, one per replica: `before(fd, body)` under the replica's lock,
    before the event's bytes are applied. Costs one stat per event while no view is open."""

    def __init__(self, image: Path) -> None:
        self.dir = sessions_dir(image)
        self.seen = -1
        self.writers: dict[str, _Writer] = {}

    def before(self, fd: int, branch: str, body: dict[str, object]) -> None:
        if branch not in DATA_BRANCHES:
            return
        self._sync()
        if not self.writers:
            return
        start = int(body["offset"])  # type: ignore[call-overload]
        end = start + int(body["length"])  # type: ignore[call-overload]
        for w in self.writers.values():
            w.keep(fd, start, end)

    def _sync(self) -> None:
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        # A directory's mtime ticks coarsely (jiffies): a change within the tick we last looked in
        # keeps the same mtime, so a recent mtime is looked at again.
        if mtime == self.seen and time.time_ns() - mtime > 2_000_000_000:
            return
        self.seen = mtime
        names = {p.name for p in self.dir.iterdir() if p.is_dir()} if mtime else set()
        for gone in set(self.writers) - names:
            self.writers.pop(gone).close()
        for name in names - set(self.writers):
            try:
                self.writers[name] = _Writer(self.dir / name)
            except FileNotFoundError:
                continue  # removed meanwhile (cannot happen under the lock; harmless anyway)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()

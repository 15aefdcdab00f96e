"""A persistent bitmap of regions whose events Kafka may not have (pure logic over a mapped file).

One bit per `granule` bytes of the volume, in a memory-mapped file. Async mode sets a region's bit
before the local write and makes it durable (`sync()`, batched by the caller) before the write is
acknowledged, so neither a crash of the process nor of the host loses the fact that the region's
event may be missing. A bit clears only when no event touching the region is in flight, and lazily
(`sweep()`, every second or so, clearing what was released at least `cool_s` ago, like DRBD's
activity log keeps hot extents): a hot region stays marked and its next write needs no msync.
When a write needs a new bit, the whole aligned extent around it (`extent` bytes, like DRBD's
activity log) and the `ahead` extents after it are marked in the same msync, so a sequential writer
finds its next extent already durable and does not wait at every extent boundary; the extra regions
are cleared by the next sweep unless written meanwhile.
Sync mode sets bits only for events Kafka refused (`set_dirty`). After a restart, the set bits are
the regions to resend as a DELTA sync.

The file's blocks are reserved when it is opened (posix_fallocate, or rewriting its content where
the filesystem cannot allocate ahead). A sparse mapped file on a full filesystem would otherwise
fail at the first store into a new page with SIGBUS, which kills the whole process: every volume
it serves. So a full disk fails at open, with an error that names the file and what to do, and later
stores only touch blocks that exist. (Copy-on-write filesystems, btrfs or ZFS, allocate again on
every write whatever was reserved: keep the state dir off them.)
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from pathlib import Path

from tapstream.core.durable import fsync_dir
from tapstream.core.logging import get_logger

log = get_logger("tapstream.tapper.dirty_bitmap")

# posix_fallocate's answers for "this filesystem cannot allocate ahead" (not "it is full").
_CANNOT_ALLOCATE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class BitmapSpaceError(OSError):
    """The bitmap's blocks could not be reserved (ENOSPC, a quota, an I/O error): nothing is mapped."""


def reserve(fd: int, nbytes: int) -> None:
    """Make every block of the file's first `nbytes` exist and written, keeping its content:
    posix_fallocate (where the filesystem can allocate ahead), then the content read and written
    back whole, and fsync. fallocate alone leaves *unwritten* extents on ext4 and the like, and the
    first writeback into one may still need a block for the extent tree (fuse2fs has no reserve for
    that: msync then fails with ENOSPC); written blocks need nothing more."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, nbytes)
        except OSError as exc:
            if exc.errno not in _CANNOT_ALLOCATE:
                raise
    data = os.pread(fd, nbytes, 0)
    data += bytes(nbytes - len(data))
    done = 0
    while done < nbytes:
        done += os.pwrite(fd, data[done:], done)
    os.fsync(fd)  # where allocation is late (delalloc, NFS, FUSE), a full disk shows here


class DirtyBitmap:
    def __init__(
        self,
        path: Path,
        volume_size: int,
        granule: int = 64 * 1024,
        extent: int = 1 << 20,
        ahead: int = 0,
    ) -> None:
        if granule <= 0 or granule & (granule - 1):
            raise ValueError(f"granule must be a power of two, not {granule}")
        if extent < granule or extent & (extent - 1):
            raise ValueError(f"extent must be a power of two of at least one granule, not {extent}")
        self._per_extent = extent // granule
        self._ahead = max(0, ahead)
        self.path = path
        self.granule = granule
        self.size = volume_size
        self.bits = -(-volume_size // granule)
        self._shift = granule.bit_length() - 1
        self._inflight: dict[int, int] = {}
        self._released: dict[int, float] = {}  # region -> monotonic time it was released
        # content that may be missing from Kafka (an event failed, or was never sent) since the
        # last resend began: the ack of another event covering the region must not clear it
        self._failed: set[int] = set()
        self._unsynced: set[int] = set()  # set since the last begin_sync(): not durable yet
        self._syncing: set[int] = set()  # covered by the msync in progress
        nbytes = max(1, -(-self.bits // 8))
        created = False
        fd = -1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                created = True
            if os.fstat(fd).st_size != nbytes:
                os.ftruncate(fd, nbytes)  # a new volume size starts a new bitmap (a resize resyncs)
            reserve(fd, nbytes)
            if created:
                fsync_dir(path.parent)  # a crash must not lose the file, and the bits in it
            self._attach(fd, nbytes)
        except OSError as exc:
            if created:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            raise self._space_error(exc, nbytes) from exc
        finally:
            if fd >= 0:
                os.close(fd)

    def _attach(self, fd: int, nbytes: int) -> None:
        """Map the reserved file (native.py's NativeDirtyBitmap maps it in the compiled core)."""
        self._map = mmap.mmap(fd, nbytes)

    def regions(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset >> self._shift, ((offset + length - 1) >> self._shift) + 1)

    def mark(self, offset: int, length: int, resend: bool = False) -> tuple[range, bool]:
        """Set the range's bits and count it in flight. Returns the regions (for `release`/`fail`)
        and whether a bit is not durable yet (then the caller must wait for a `sync()` that
        started after this call before acknowledging). `resend`: a sync block that reads the
        regions' content after this call, so it covers their earlier failures."""
        regions = self.regions(offset, length)
        m, inflight, unsynced = self._map, self._inflight, self._unsynced
        if resend:
            self._failed.difference_update(regions)
        new = wait = False
        for r in regions:
            inflight[r] = inflight.get(r, 0) + 1
            byte, bit = r >> 3, 1 << (r & 7)
            if not m[byte] & bit:
                m[byte] |= bit
                unsynced.add(r)
                new = True
            elif r in unsynced or r in self._syncing:
                wait = True
        if new and (self._per_extent > 1 or self._ahead):
            k, now = self._per_extent, time.monotonic()
            for r in range(
                regions.start // k * k, min(self.bits, (-(-regions.stop // k) + self._ahead) * k)
            ):
                byte, bit = r >> 3, 1 << (r & 7)
                if not m[byte] & bit:
                    m[byte] |= bit
                    unsynced.add(r)
                    self._released[r] = now  # reserved with this msync; swept if unused
        return regions, new or wait

    def begin_sync(self) -> bool:
        """Start a batched msync: the bits set so far are what it makes durable. False if none."""
        self._syncing, self._unsynced = self._unsynced, set()
        return bool(self._syncing)

    def end_sync(self) -> None:
        self._syncing = set()

    def release(self, regions: range) -> None:
        """An event covering `regions` was acknowledged; `sweep()` clears what nothing else holds."""
        inflight, failed, now = self._inflight, self._failed, time.monotonic()
        for r in regions:
            left = inflight[r] - 1
            if left:
                inflight[r] = left
            else:
                del inflight[r]
                if r not in failed:  # else it waits for its resend
                    self._released[r] = now

    def fail(self, regions: range) -> None:
        """An event covering `regions` failed (or was never sent): stop counting it, keep the bits
        until a resend (`mark(resend=True)`) that began after this call is acked."""
        inflight = self._inflight
        self._failed.update(regions)
        for r in regions:
            self._released.pop(r, None)
            left = inflight[r] - 1
            if left:
                inflight[r] = left
            else:
                del inflight[r]

    def set_dirty(self, offset: int, length: int) -> None:
        """Mark the range for a resync without counting anything in flight (a refused event)."""
        m = self._map
        regions = self.regions(offset, length)
        self._failed.update(regions)
        for r in regions:
            self._released.pop(r, None)
            m[r >> 3] |= 1 << (r & 7)

    def sweep(self, cool_s: float = 0.0) -> int:
        """Clear the bits of regions released at least `cool_s` ago that nothing holds any more
        (a region in flight again is released again later); returns how many."""
        m, cleared, released = self._map, 0, self._released
        cutoff = time.monotonic() - cool_s
        for r in [r for r, t in released.items() if t <= cutoff] if cool_s else list(released):
            del released[r]
            if r not in self._inflight:
                m[r >> 3] &= ~(1 << (r & 7)) & 0xFF
                cleared += 1
        return cleared

    def dirty(self) -> list[int]:
        """Regions whose bit is set."""
        out: list[int] = []
        for i, byte in enumerate(bytes(self._map)):
            if byte:
                out.extend(i * 8 + b for b in range(8) if byte >> b & 1 and i * 8 + b < self.bits)
        return out

    def orphans(self) -> list[int]:
        """Set bits no in-flight or acked event accounts for, and failed ones: regions that need
        a resync."""
        inflight, released, failed = self._inflight, self._released, self._failed
        return [r for r in self.dirty() if r in failed or (r not in inflight and r not in released)]

    def dirty_ranges(self, only_orphans: bool = False) -> list[tuple[int, int]]:
        """The set bits (or only the orphans) as coalesced byte ranges (start, end) within the volume."""
        out: list[tuple[int, int]] = []
        for r in self.orphans() if only_orphans else self.dirty():
            a, b = r * self.granule, min(self.size, (r + 1) * self.granule)
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out

    def dirty_bytes(self) -> int:
        return int.from_bytes(self._map, "little").bit_count() * self.granule

    def _space_error(self, exc: OSError, nbytes: int) -> BitmapSpaceError:
        volume = self.path.name.removesuffix(".dirty")
        full = exc.errno in _NO_SPACE
        what = (
            f"the filesystem of {self.path.parent} is full ({exc.strerror})"
            if full
            else f"{exc.strerror or exc!r}"
        )
        message = (
            f"cannot reserve the {nbytes}-byte dirty bitmap of volume {volume!r} at {self.path}: "
            f"{what}. Free space there (or move TAPSTREAM_TAPPER_STATE_DIR to a filesystem with "
            f"room) and start again; the volume is not served without its bitmap."
        )
        log.error(
            "dirty bitmap cannot be reserved",
            volume=volume,
            path=str(self.path),
            bytes=nbytes,
            error=exc.strerror or repr(exc),
            hint="free space in the state dir" if full else None,
        )
        return BitmapSpaceError(exc.errno or errno.EIO, message)

    def sync(self) -> None:
        """msync: make the bits set so far durable. Raises OSError (logged here, with the file)."""
        try:
            self._msync()
        except OSError as exc:
            log.error(
                "dirty bitmap msync failed: its new bits may not survive a crash",
                path=str(self.path),
                error=exc.strerror or repr(exc),
                hint="free space in the state dir" if exc.errno in _NO_SPACE else None,
            )
            raise

    def _msync(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.flush()
        self._map.close()

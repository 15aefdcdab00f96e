"""A persistent bitmap of regions whose events Kafka may not have (pure logic over a mapped file).

One bit per `granule` bytes of the volume, in a memory-mapped file. Async mode sets a region's bit
before the local write and makes it durable (`sync()`, batched by the caller) before the write is
acknowledged, so neither a crash of the process nor of the host loses the fact that the region's
event may be missing. A bit clears only when no event touching the region is in flight, and lazily
(`sweep()`, every second or so): a hot region stays marked and its next write needs no sync.
When a write needs a new bit, the whole aligned extent around it (`extent` bytes, like DRBD's
activity log) and the `ahead` extents after it are marked in the same msync, so a sequential writer
finds its next extent already durable and does not wait at every extent boundary; the extra regions
are cleared by the next sweep unless written meanwhile.
Sync mode sets bits only for events Kafka refused (`set_dirty`). After a restart, the set bits are
the regions to resend as a DELTA sync.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path


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
        self._released: set[int] = set()
        self._unsynced: set[int] = set()  # set since the last begin_sync(): not durable yet
        self._syncing: set[int] = set()  # covered by the msync in progress
        nbytes = max(1, -(-self.bits // 8))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != nbytes:
                os.ftruncate(fd, nbytes)  # a new volume size starts a new bitmap (a resize resyncs)
            self._map = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)

    def regions(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset >> self._shift, ((offset + length - 1) >> self._shift) + 1)

    def mark(self, offset: int, length: int) -> tuple[range, bool]:
        """Set the range's bits and count it in flight. Returns the regions (for `release`/`fail`)
        and whether a bit is not durable yet (then the caller must wait for a `sync()` that
        started after this call before acknowledging)."""
        regions = self.regions(offset, length)
        m, inflight, unsynced = self._map, self._inflight, self._unsynced
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
            k = self._per_extent
            for r in range(
                regions.start // k * k, min(self.bits, (-(-regions.stop // k) + self._ahead) * k)
            ):
                byte, bit = r >> 3, 1 << (r & 7)
                if not m[byte] & bit:
                    m[byte] |= bit
                    unsynced.add(r)
                    self._released.add(r)  # reserved with this msync; the sweep clears it if unused
        return regions, new or wait

    def begin_sync(self) -> bool:
        """Start a batched msync: the bits set so far are what it makes durable. False if none."""
        self._syncing, self._unsynced = self._unsynced, set()
        return bool(self._syncing)

    def end_sync(self) -> None:
        self._syncing = set()

    def release(self, regions: range) -> None:
        """An event covering `regions` was acknowledged; `sweep()` clears what nothing else holds."""
        inflight = self._inflight
        for r in regions:
            left = inflight[r] - 1
            if left:
                inflight[r] = left
            else:
                del inflight[r]
                self._released.add(r)

    def fail(self, regions: range) -> None:
        """An event covering `regions` failed (or was never sent): stop counting it, keep the bits."""
        inflight = self._inflight
        for r in regions:
            self._released.discard(r)
            left = inflight[r] - 1
            if left:
                inflight[r] = left
            else:
                del inflight[r]

    def set_dirty(self, offset: int, length: int) -> None:
        """Mark the range for a resync without counting anything in flight (a refused event)."""
        m = self._map
        for r in self.regions(offset, length):
            self._released.discard(r)
            m[r >> 3] |= 1 << (r & 7)

    def sweep(self) -> int:
        """Clear the bits of released regions nothing holds any more; returns how many."""
        m, cleared = self._map, 0
        for r in self._released:
            if r not in self._inflight:
                m[r >> 3] &= ~(1 << (r & 7)) & 0xFF
                cleared += 1
        self._released.clear()
        return cleared

    def dirty(self) -> list[int]:
        """Regions whose bit is set."""
        out: list[int] = []
        for i, byte in enumerate(bytes(self._map)):
            if byte:
                out.extend(i * 8 + b for b in range(8) if byte >> b & 1 and i * 8 + b < self.bits)
        return out

    def orphans(self) -> list[int]:
        """Set bits no in-flight or acked event accounts for: regions that need a resync."""
        return [r for r in self.dirty() if r not in self._inflight and r not in self._released]

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

    def sync(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.flush()
        self._map.close()

"""A persistent bitmap of regions whose events Kafka has not acknowledged yet (async mode).

One bit per `granule` bytes of the volume, in a memory-mapped file: a bit set before the local write
survives a crash of the tapper process (the page cache keeps it), and `sync()` on FLUSH makes it as
durable as the data it covers. A region's bit is cleared only when no event touching it is in flight.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path


class DirtyBitmap:
    def __init__(self, path: Path, volume_size: int, granule: int = 64 * 1024) -> None:
        self.path = path
        self.granule = granule
        self.bits = -(-volume_size // granule)
        self._inflight: dict[int, int] = {}
        nbytes = max(1, -(-self.bits // 8))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != nbytes:
                os.ftruncate(fd, nbytes)
            self._map = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)

    def regions(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset // self.granule, (offset + length - 1) // self.granule + 1)

    def mark(self, offset: int, length: int) -> range:
        """Set the bits of the range and count it in flight; returns the regions for `release`."""
        regions = self.regions(offset, length)
        m = self._map
        for r in regions:
            self._inflight[r] = self._inflight.get(r, 0) + 1
            m[r >> 3] |= 1 << (r & 7)
        return regions

    def release(self, regions: range) -> None:
        """An event covering `regions` was acknowledged: clear the bits nothing else holds."""
        m = self._map
        for r in regions:
            left = self._inflight[r] - 1
            if left:
                self._inflight[r] = left
            else:
                del self._inflight[r]
                m[r >> 3] &= ~(1 << (r & 7)) & 0xFF

    def fail(self, regions: range) -> None:
        """An event covering `regions` failed: stop counting it, but keep the bits for a resync."""
        for r in regions:
            left = self._inflight[r] - 1
            if left:
                self._inflight[r] = left
            else:
                del self._inflight[r]

    def dirty(self) -> list[int]:
        """Regions marked dirty (e.g. left by a crash)."""
        out = []
        for i, byte in enumerate(bytes(self._map)):
            if byte:
                out.extend(i * 8 + b for b in range(8) if byte >> b & 1 and i * 8 + b < self.bits)
        return out

    def clear(self, region: int) -> None:
        if region not in self._inflight:
            self._map[region >> 3] &= ~(1 << (region & 7)) & 0xFF

    def dirty_bytes(self) -> int:
        return int.from_bytes(self._map, "little").bit_count() * self.granule

    def sync(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.flush()
        self._map.close()

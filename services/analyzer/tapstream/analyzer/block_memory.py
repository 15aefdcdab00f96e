"""What each block of a volume held last, packed per 1 MiB region (pure, no I/O).

A region is 256 blocks, two bytes each (little-endian): 0 = never seen, 1 = zero, 0x100|mask =
data with that high-sector mask, plus 0x200 when the data was text-safe encoded (base64/hex). 512 bytes per MiB of volume, kept in a faust table keyed
"<volume>/<region>", so a restarted analyzer remembers every block it has seen.
"""

from __future__ import annotations

from tapstream.analyzer.scoring import BLOCK, Prior

BLOCKS_PER_REGION = 256
REGION_BYTES = BLOCKS_PER_REGION * BLOCK
_EMPTY = bytes(2 * BLOCKS_PER_REGION)


def region_of(block: int) -> int:
    return block // BLOCKS_PER_REGION


def region_key(volume: str, region: int) -> str:
    return f"{volume}/{region}"


class Region:
    """One region's block memory, read from and written back to its packed bytes."""

    __slots__ = ("cells", "dirty")

    def __init__(self, packed: bytes | None = None) -> None:
        self.cells = bytearray(packed if packed else _EMPTY)
        self.dirty = False

    def get(self, block: int) -> tuple[Prior, int]:
        i = 2 * (block % BLOCKS_PER_REGION)
        v = self.cells[i] | (self.cells[i + 1] << 8)
        if v == 0:
            return Prior.UNKNOWN, 0
        if v == 1:
            return Prior.ZERO, 0
        return Prior.DATA, v & 0xFF

    def encoded(self, block: int) -> bool:
        return bool(self.cells[2 * (block % BLOCKS_PER_REGION) + 1] & 0x02)

    def set_data(self, block: int, mask: int, encoded: bool = False) -> None:
        self._put(block, 0x100 | mask | (0x200 if encoded else 0))

    def set_zero(self, block: int) -> None:
        self._put(block, 1)

    def _put(self, block: int, v: int) -> None:
        i = 2 * (block % BLOCKS_PER_REGION)
        if self.cells[i] != v & 0xFF or self.cells[i + 1] != v >> 8:
            self.cells[i] = v & 0xFF
            self.cells[i + 1] = v >> 8
            self.dirty = True

    def packed(self) -> bytes:
        return bytes(self.cells)


def zero_range(offset: int, length: int) -> range:
    """Whole blocks inside a zeroed/trimmed byte range."""
    first = -(-offset // BLOCK)
    end = (offset + length) // BLOCK
    return range(first, max(first, end))

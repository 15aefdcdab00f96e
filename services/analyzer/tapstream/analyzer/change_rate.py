"""Change-rate accounting per volume and window, and the WAN bandwidth an RPO needs (pure, no I/O).

Per window: bytes written, 4 KiB blocks written, distinct blocks changed ("unique") and repeat
writes of a block already changed in the same window ("rewritten"). Stream replication
(MirrorMaker 2) ships every write, rewrites included, so the bandwidth comes from bytes written;
`unique_bytes` says what a snapshot-style replicator that coalesces per window would ship instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BLOCK = 4096


@dataclass
class Window:
    volume: str
    start: int  # us
    bytes_written: int = 0
    block_writes: int = 0
    zeroed_bytes: int = 0
    blocks: set[int] = field(default_factory=set)

    @property
    def unique_blocks(self) -> int:
        return len(self.blocks)

    @property
    def rewritten_blocks(self) -> int:
        return self.block_writes - len(self.blocks)

    @property
    def unique_bytes(self) -> int:
        return len(self.blocks) * BLOCK


@dataclass(frozen=True)
class Row:
    """One volume-window, as printed and charted."""

    volume: str
    start: int
    bytes_written: int
    unique_blocks: int
    rewritten_blocks: int
    unique_bytes: int
    zeroed_bytes: int


def _blocks(offset: int, length: int) -> range:
    return range(offset // BLOCK, (offset + length + BLOCK - 1) // BLOCK)


class ChangeRate:
    """Accumulates writes into tumbling windows of `window_s` seconds per volume."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.width = int(window_s * 1e6)
        self.windows: dict[tuple[str, int], Window] = {}

    def _window(self, volume: str, ts: int) -> Window:
        start = ts - ts % self.width
        w = self.windows.get((volume, start))
        if w is None:
            w = self.windows[(volume, start)] = Window(volume, start)
        return w

    def add_write(self, volume: str, ts: int, offset: int, length: int) -> None:
        w = self._window(volume, ts)
        w.bytes_written += length
        span = _blocks(offset, length)
        w.block_writes += len(span)
        w.blocks.update(span)

    def add_zero(self, volume: str, ts: int, offset: int, length: int) -> None:
        """Zero/trim: blocks change, but the event carries no data across the WAN."""
        w = self._window(volume, ts)
        w.zeroed_bytes += length
        span = _blocks(offset, length)
        w.block_writes += len(span)
        w.blocks.update(span)

    def rows(self) -> list[Row]:
        return [
            Row(
                w.volume,
                w.start,
                w.bytes_written,
                w.unique_blocks,
                w.rewritten_blocks,
                w.unique_bytes,
                w.zeroed_bytes,
            )
            for _, w in sorted(self.windows.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]


def group_series(rows: Iterable[Row], width_us: int) -> list[tuple[int, int]]:
    """(window start, bytes written by every volume) for consecutive windows, empty ones as 0."""
    per: dict[int, int] = {}
    for r in rows:
        per[r.start] = per.get(r.start, 0) + r.bytes_written
    if not per:
        return []
    first, last = min(per), max(per)
    return [(t, per.get(t, 0)) for t in range(first, last + width_us, width_us)]


def wan_bandwidth(series: list[tuple[int, int]], width_s: float, rpo_s: float) -> float:
    """Bytes/s a link must carry so that no write waits longer than `rpo_s` to cross it.

    A FIFO link of rate B keeps every write's delay <= R exactly when, for every interval of
    windows, the bytes written in it fit in B * (interval length + R). So B is the largest
    bytes / (length + R) over all runs of consecutive windows (quadratic in windows; fine for
    the hours a CLI looks at).
    """
    if rpo_s < 0:
        raise ValueError("rpo_s must be >= 0")
    values = [b for _, b in series]
    best = 0.0
    for i in range(len(values)):
        total = 0
        for j in range(i, len(values)):
            total += values[j]
            best = max(best, total / ((j - i + 1) * width_s + rpo_s))
    return best

"""An interval map from byte ranges of a volume to positions in some source. Pure logic.

Each interval [start, end) maps to `pos`: byte `start + k` lives at `pos + k` of its source. The
first assignment of a byte wins (`fill` only assigns the gaps), which is what both users need: the
journal coverage is built newest event first, and a preserve session keeps the first old content a
byte had. Adjacent intervals whose positions continue are merged, so a map stays small.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple


class Piece(NamedTuple):
    start: int
    end: int
    pos: int | None  # where `start` lives in the source, or None when the map does not cover it


class Extents:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pos: list[int] = []

    def __len__(self) -> int:
        return len(self.starts)

    def pieces(self, start: int, end: int) -> list[Piece]:
        """[start, end) cut into covered pieces (with their position) and gaps (pos None), in order."""
        out: list[Piece] = []
        i = max(0, bisect_right(self.starts, start) - 1)
        at = start
        while at < end and i < len(self.starts):
            s, e = self.starts[i], self.ends[i]
            if e <= at:
                i += 1
                continue
            if s >= end:
                break
            if s > at:
                out.append(Piece(at, s, None))
                at = s
            stop = min(e, end)
            out.append(Piece(at, stop, self.pos[i] + (at - s)))
            at = stop
            i += 1
        if at < end:
            out.append(Piece(at, end, None))
        return out

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        return [(p.start, p.end) for p in self.pieces(start, end) if p.pos is None]

    def covers_any(self, start: int, end: int) -> bool:
        return any(p.pos is not None for p in self.pieces(start, end))

    def fill(self, start: int, end: int, pos: int) -> list[tuple[int, int, int]]:
        """Map the gaps of [start, end) to `pos + (byte - start)`; returns what was added
        as (start, end, pos) triples."""
        added = [(a, b, pos + (a - start)) for a, b in self.gaps(start, end)]
        for a, b, p in added:
            self._insert(a, b, p)
        return added

    def _insert(self, start: int, end: int, pos: int) -> None:
        """Insert an interval that overlaps none, merging with neighbours that continue it."""
        i = bisect_right(self.starts, start)
        if (
            i > 0
            and self.ends[i - 1] == start
            and self.pos[i - 1] + (start - self.starts[i - 1]) == pos
        ):
            i -= 1
            self.ends[i] = end
        else:
            self.starts.insert(i, start)
            self.ends.insert(i, end)
            self.pos.insert(i, pos)
        j = i + 1
        if (
            j < len(self.starts)
            and self.starts[j] == self.ends[i]
            and self.pos[j] == self.pos[i] + (self.ends[i] - self.starts[i])
        ):
            self.ends[i] = self.ends[j]
            del self.starts[j], self.ends[j], self.pos[j]

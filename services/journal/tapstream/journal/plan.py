"""Which journal events a restore needs: the newest event wins each byte, so an event entirely
overwritten by later events (up to the checkpoint) need not be fetched at all. Pure logic."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import NamedTuple


class Span(NamedTuple):
    seq: int
    off: int
    len: int
    kpartition: int
    koffset: int


class Covered:
    """A set of disjoint [start, end) intervals."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def covers(self, start: int, end: int) -> bool:
        i = bisect_left(self.ends, start + 1)
        return i < len(self.starts) and self.starts[i] <= start and self.ends[i] >= end

    def add(self, start: int, end: int) -> None:
        i = bisect_left(self.ends, start)
        j = i
        while j < len(self.starts) and self.starts[j] <= end:
            start, end = min(start, self.starts[j]), max(end, self.ends[j])
            j += 1
        del self.starts[i:j], self.ends[i:j]
        insort(self.starts, start)
        self.ends.insert(self.starts.index(start), end)


def needed(spans: Iterable[Span]) -> list[Span]:
    """Spans (data-changing events) not wholly overwritten by later ones, in ascending seq order."""
    covered = Covered()
    keep: list[Span] = []
    for span in sorted(spans, key=lambda s: -s.seq):
        if span.len <= 0:
            continue
        end = span.off + span.len
        if not covered.covers(span.off, end):
            keep.append(span)
        covered.add(span.off, end)
    keep.reverse()
    return keep

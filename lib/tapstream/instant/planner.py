"""The read planner of a checkpoint view: which source answers each byte of a read. Pure logic.

Newest first: bytes the journal's events up to the checkpoint changed come from the delta file
(those events applied, in order, to an empty sparse file: same offsets); the rest is the replica as
it was when the view opened, that is the preserved copy of what the VDSA overwrote since, or else the
replica itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from tapstream.instant.extents import Extents


class Source(StrEnum):
    DELTA = "delta"
    PRESERVED = "preserved"
    BASE = "base"


class Read(NamedTuple):
    source: Source
    src: int  # offset in the source file
    length: int
    at: int  # offset in the caller's buffer


def plan(offset: int, length: int, journal: Extents, preserved: Extents) -> list[Read]:
    """The reads that fill [offset, offset + length) of the view, in buffer order."""
    out: list[Read] = []
    for j in journal.pieces(offset, offset + length):
        if j.pos is not None:
            out.append(Read(Source.DELTA, j.pos, j.end - j.start, j.start - offset))
            continue
        for p in preserved.pieces(j.start, j.end):
            if p.pos is not None:
                out.append(Read(Source.PRESERVED, p.pos, p.end - p.start, p.start - offset))
            else:
                out.append(Read(Source.BASE, p.start, p.end - p.start, p.start - offset))
    return out


def touches(reads: list[Read], added: list[tuple[int, int, int]]) -> bool:
    """Whether newly preserved ranges overlap any base read (that read may have seen newer bytes)."""
    return any(
        r.source is Source.BASE and a < r.src + r.length and r.src < b
        for r in reads
        for a, b, _ in added
    )

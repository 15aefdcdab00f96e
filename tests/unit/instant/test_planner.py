"""The read planner: journal over preserved over replica, and when a replica read must be redone."""

from __future__ import annotations

from tapstream.instant.extents import Extents
from tapstream.instant.planner import Read, Source, plan, touches


def test_journal_wins_then_preserved_then_base() -> None:
    journal, preserved = Extents(), Extents()
    journal.fill(4096, 8192, 4096)
    preserved.fill(0, 6000, 70_000)  # the VDSA overwrote [0, 6000) of the replica since
    assert plan(0, 12288, journal, preserved) == [
        Read(Source.PRESERVED, 70_000, 4096, 0),
        Read(Source.DELTA, 4096, 4096, 4096),
        Read(Source.BASE, 8192, 4096, 8192),
    ]


def test_a_read_inside_one_source_is_one_read() -> None:
    journal = Extents()
    journal.fill(0, 1 << 20, 0)
    assert plan(512, 512, journal, Extents()) == [Read(Source.DELTA, 512, 512, 0)]
    assert plan(2 << 20, 4096, journal, Extents()) == [Read(Source.BASE, 2 << 20, 4096, 0)]


def test_touches_only_base_reads_that_overlap() -> None:
    reads = [Read(Source.DELTA, 0, 4096, 0), Read(Source.BASE, 4096, 4096, 4096)]
    assert not touches(reads, [(0, 4096, 9)])  # preserved where the journal answers anyway
    assert not touches(reads, [(8192, 9000, 9)])
    assert touches(reads, [(8000, 8200, 9)])

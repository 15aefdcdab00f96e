"""The interval map: first assignment wins, pieces cut a range exactly, continuing runs merge."""

from __future__ import annotations

import itertools
import random

from tapstream.instant.extents import Extents, Piece


def reference(ops: list[tuple[int, int, int]], size: int) -> list[int | None]:
    """Byte by byte: where each byte lives (first assignment wins)."""
    where: list[int | None] = [None] * size
    for start, end, pos in ops:
        for b in range(start, end):
            if where[b] is None:
                where[b] = pos + (b - start)
    return where


def test_pieces_of_an_empty_map_are_one_gap() -> None:
    assert Extents().pieces(10, 20) == [Piece(10, 20, None)]


def test_first_fill_wins_and_gaps_are_reported() -> None:
    m = Extents()
    assert m.fill(100, 200, 0) == [(100, 200, 0)]
    assert m.fill(50, 250, 1000) == [(50, 100, 1000), (200, 250, 1150)]
    assert m.pieces(0, 300) == [
        Piece(0, 50, None),
        Piece(50, 100, 1000),
        Piece(100, 200, 0),
        Piece(200, 250, 1150),
        Piece(250, 300, None),
    ]
    assert m.pieces(150, 160) == [Piece(150, 160, 50)]


def test_continuing_runs_merge_into_one_interval() -> None:
    m = Extents()
    m.fill(0, 10, 0)
    m.fill(20, 30, 20)
    m.fill(10, 20, 10)  # the identity map, filled out of order
    assert len(m) == 1 and m.pieces(0, 30) == [Piece(0, 30, 0)]
    m.fill(30, 40, 500)  # adjacent but not continuing: stays apart
    assert len(m) == 2


def test_random_fills_match_a_byte_by_byte_reference() -> None:
    rnd = random.Random(7)
    size = 400
    for _ in range(200):
        m = Extents()
        ops = []
        for _ in range(rnd.randint(1, 12)):
            start = rnd.randrange(size)
            end = rnd.randint(start + 1, min(size, start + 80))
            pos = rnd.choice([start, rnd.randrange(10_000)])
            ops.append((start, end, pos))
            m.fill(start, end, pos)
        want = reference(ops, size)
        a = rnd.randrange(size)
        b = rnd.randint(a + 1, size)
        got: list[int | None] = []
        pieces = m.pieces(a, b)
        assert pieces[0].start == a and pieces[-1].end == b
        for p, q in itertools.pairwise(pieces):
            assert p.end == q.start
        for p in pieces:
            got += [None if p.pos is None else p.pos + k for k in range(p.end - p.start)]
        assert got == want[a:b]
        assert m.starts == sorted(m.starts)
        assert all(s < e for s, e in zip(m.starts, m.ends, strict=True))

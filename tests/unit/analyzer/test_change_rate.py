"""Change-rate accounting and WAN sizing: pure, milliseconds."""

from __future__ import annotations

import pytest

from tapstream.analyzer.change_rate import ChangeRate, group_series, wan_bandwidth

S = 1_000_000


def test_unique_and_rewritten_blocks_per_window() -> None:
    cr = ChangeRate(10)
    cr.add_write("a", 0, 0, 8192)  # blocks 0, 1
    cr.add_write("a", 1 * S, 4096, 4096)  # block 1 again
    cr.add_zero("a", 2 * S, 1 << 20, 4096)
    cr.add_write("a", 11 * S, 0, 4096)  # next window
    cr.add_write("b", 0, 0, 100)  # a partial block counts as one block
    rows = {(r.volume, r.start): r for r in cr.rows()}
    first = rows[("a", 0)]
    assert (
        first.bytes_written,
        first.unique_blocks,
        first.rewritten_blocks,
        first.zeroed_bytes,
    ) == (12288, 3, 1, 4096)
    assert rows[("a", 10 * S)].unique_blocks == 1 and rows[("b", 0)].unique_blocks == 1


def test_group_series_fills_empty_windows() -> None:
    cr = ChangeRate(10)
    cr.add_write("a", 0, 0, 100)
    cr.add_write("b", 1, 0, 50)
    cr.add_write("a", 30 * S, 0, 10)
    assert group_series(cr.rows(), 10 * S) == [(0, 150), (10 * S, 0), (20 * S, 0), (30 * S, 10)]


def test_wan_bandwidth_for_an_rpo() -> None:
    # 100 MB in one 10 s window, then quiet: with RPO 0 the link must carry 10 MB/s; a 90 s RPO
    # lets the burst drain over 100 s.
    series = [(i, 100_000_000 if i == 0 else 0) for i in range(20)]
    assert wan_bandwidth(series, 10, 0) == pytest.approx(10_000_000)
    assert wan_bandwidth(series, 10, 90) == pytest.approx(1_000_000)
    # A steady rate needs that rate whatever the RPO.
    steady = [(i, 5_000_000) for i in range(100)]
    assert wan_bandwidth(steady, 10, 60) == pytest.approx(500_000 * 1000 / 1060)
    assert wan_bandwidth([], 10, 5) == 0

"""The dirty bitmap: marks survive a reopen (a crash), bits clear only when nothing is in flight and
only on sweep, a refused event keeps its region, new bits are reported so the caller can msync."""

from pathlib import Path

import pytest

from tapstream.tapper.dirty_bitmap import DirtyBitmap


def test_marks_persist_across_reopen(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024, extent=64 * 1024)
    bm.mark(65536 + 10, 70000)  # spans regions 1 and 2
    bm.close()
    again = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024, extent=64 * 1024)
    assert again.dirty() == [1, 2]
    assert again.dirty_ranges() == [(65536, 3 * 65536)]
    assert again.dirty_bytes() == 2 * 64 * 1024


def durable(bm: DirtyBitmap) -> None:
    assert bm.begin_sync()
    bm.sync()
    bm.end_sync()


def test_mark_asks_to_wait_until_its_bits_are_durable(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    assert bm.mark(0, 4096)[1] is True
    assert bm.mark(100, 10)[1] is True  # marked, but the msync has not happened yet
    durable(bm)
    assert bm.mark(100, 10)[1] is False  # durable now: no wait
    assert bm.mark(4000, 200)[1] is True  # reaches into region 1
    assert bm.begin_sync()  # an msync in progress covers region 1 ...
    assert bm.mark(4096, 1)[1] is True  # ... but until it ends, a write there still waits
    bm.end_sync()
    assert bm.begin_sync() is False  # nothing new to make durable


def test_bit_clears_on_sweep_only_when_the_last_inflight_event_is_acked(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    a, _ = bm.mark(0, 4096)
    b, _ = bm.mark(100, 10)
    bm.release(a)
    bm.sweep()
    assert bm.dirty() == [0]
    bm.release(b)
    assert bm.dirty() == [0]  # cleared lazily, so a hot region's next write needs no msync
    assert bm.sweep() == 1
    assert bm.dirty() == []


def test_remarked_region_survives_the_sweep(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    bm.release(bm.mark(0, 10)[0])
    bm.mark(0, 10)  # written again before the sweep
    bm.sweep()
    assert bm.dirty() == [0]


def test_failed_or_refused_event_keeps_the_region_dirty(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    bm.fail(bm.mark(8192, 4096)[0])
    bm.set_dirty(3 * 4096, 1)
    bm.sweep()
    assert bm.dirty() == [2, 3]
    # a later resync of the region that is acked clears it
    bm.release(bm.mark(8192, 4096)[0])
    bm.sweep()
    assert bm.dirty() == [3]


def test_last_partial_region_counts(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 10_000, granule=4096, extent=4096)
    assert bm.bits == 3
    bm.mark(9_999, 1)
    assert bm.dirty() == [2]
    assert bm.dirty_ranges() == [(8192, 10_000)]


def test_granule_must_be_a_power_of_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="power of two"):
        DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=3000)


def test_a_new_bit_reserves_its_whole_extent_until_the_sweep(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=16 * 4096)
    regions, new = bm.mark(5 * 4096, 4096)
    assert new and bm.dirty() == list(
        range(16)
    )  # one msync covers the sequential writes that follow
    assert bm.orphans() == []  # reserved, not lost: nothing to resync
    durable(bm)
    assert bm.mark(6 * 4096, 4096)[1] is False
    bm.release(regions)
    bm.sweep()
    assert bm.dirty() == [6]  # still in flight


def test_a_new_bit_also_reserves_the_extents_ahead(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4 * 4096, ahead=2)
    regions, new = bm.mark(5 * 4096, 4096)
    assert new and bm.dirty() == list(range(4, 16))  # its extent and the two after it
    durable(bm)
    # a sequential writer crossing into the next extent finds its bit durable: no msync to wait for
    assert bm.mark(8 * 4096, 4096)[1] is False
    bm.release(regions)
    bm.sweep()
    assert bm.dirty() == [8]  # reservations nobody wrote are cleared; the write in flight stays


def test_reservations_stop_at_the_end_of_the_volume(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 10 * 4096, granule=4096, extent=4 * 4096, ahead=3)
    bm.mark(9 * 4096, 1)
    assert bm.dirty() == [8, 9]

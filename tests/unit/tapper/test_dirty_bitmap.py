"""The dirty bitmap: marks survive a reopen (a crash), bits clear only when nothing is in flight."""

from pathlib import Path

from tapstream.tapper.dirty_bitmap import DirtyBitmap


def test_marks_persist_across_reopen(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024)
    bm.mark(65536 + 10, 70000)  # spans regions 1 and 2
    bm.close()
    again = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024)
    assert again.dirty() == [1, 2]
    assert again.dirty_bytes() == 2 * 64 * 1024


def test_bit_clears_only_when_the_last_inflight_event_is_acked(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096)
    a = bm.mark(0, 4096)
    b = bm.mark(100, 10)
    bm.release(a)
    assert bm.dirty() == [0]
    bm.release(b)
    assert bm.dirty() == []


def test_failed_event_keeps_the_region_dirty(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096)
    bm.fail(bm.mark(8192, 4096))
    assert bm.dirty() == [2]
    bm.clear(2)
    assert bm.dirty() == []


def test_last_partial_region_counts(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", 10_000, granule=4096)
    assert bm.bits == 3
    bm.mark(9_999, 1)
    assert bm.dirty() == [2]

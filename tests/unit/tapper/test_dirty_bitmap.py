"""The dirty bitmap: marks survive a reopen (a crash), bits clear only when nothing is in flight and
only on sweep, a refused event keeps its region, new bits are reported so the caller can msync."""

from pathlib import Path

import pytest

from tapstream.tapper import native
from tapstream.tapper.dirty_bitmap import DirtyBitmap

IMPLEMENTATIONS = {"python": DirtyBitmap, "native": native.NativeDirtyBitmap}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def Bitmap(request: pytest.FixtureRequest) -> type[DirtyBitmap]:
    """Each test runs on both: the compiled core's bitmap must be the same bitmap."""
    if request.param == "native":
        assert native.available(), "the compiled data path is not built: run `make setup`"
    return IMPLEMENTATIONS[request.param]


def test_marks_persist_across_reopen(tmp_path: Path, Bitmap: type[DirtyBitmap]) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024, extent=64 * 1024)
    bm.mark(65536 + 10, 70000)  # spans regions 1 and 2
    bm.close()
    again = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=64 * 1024, extent=64 * 1024)
    assert again.dirty() == [1, 2]
    assert again.dirty_ranges() == [(65536, 3 * 65536)]
    assert again.dirty_bytes() == 2 * 64 * 1024


def durable(bm: DirtyBitmap) -> None:
    assert bm.begin_sync()
    bm.sync()
    bm.end_sync()


def test_mark_asks_to_wait_until_its_bits_are_durable(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    assert bm.mark(0, 4096)[1] is True
    assert bm.mark(100, 10)[1] is True  # marked, but the msync has not happened yet
    durable(bm)
    assert bm.mark(100, 10)[1] is False  # durable now: no wait
    assert bm.mark(4000, 200)[1] is True  # reaches into region 1
    assert bm.begin_sync()  # an msync in progress covers region 1 ...
    assert bm.mark(4096, 1)[1] is True  # ... but until it ends, a write there still waits
    bm.end_sync()
    assert bm.begin_sync() is False  # nothing new to make durable


def test_bit_clears_on_sweep_only_when_the_last_inflight_event_is_acked(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    a, _ = bm.mark(0, 4096)
    b, _ = bm.mark(100, 10)
    bm.release(a)
    bm.sweep()
    assert bm.dirty() == [0]
    bm.release(b)
    assert bm.dirty() == [0]  # cleared lazily, so a hot region's next write needs no msync
    assert bm.sweep() == 1
    assert bm.dirty() == []


def test_remarked_region_survives_the_sweep(tmp_path: Path, Bitmap: type[DirtyBitmap]) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    bm.release(bm.mark(0, 10)[0])
    bm.mark(0, 10)  # written again before the sweep
    bm.sweep()
    assert bm.dirty() == [0]


def test_failed_or_refused_event_keeps_the_region_dirty(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    bm.fail(bm.mark(8192, 4096)[0])
    bm.set_dirty(3 * 4096, 1)
    bm.sweep()
    assert bm.dirty() == [2, 3]
    # a later write's ack does not clear it (it may cover part of the region only) ...
    bm.release(bm.mark(8192, 10)[0])
    bm.sweep()
    assert bm.dirty() == [2, 3]
    # ... a later resync of the region that is acked does
    bm.release(bm.mark(8192, 4096, resend=True)[0])
    bm.sweep()
    assert bm.dirty() == [3]


def test_last_partial_region_counts(tmp_path: Path, Bitmap: type[DirtyBitmap]) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 10_000, granule=4096, extent=4096)
    assert bm.bits == 3
    bm.mark(9_999, 1)
    assert bm.dirty() == [2]
    assert bm.dirty_ranges() == [(8192, 10_000)]


def test_granule_must_be_a_power_of_two(tmp_path: Path, Bitmap: type[DirtyBitmap]) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Bitmap(tmp_path / "v.dirty", 1 << 20, granule=3000)


def test_a_new_bit_reserves_its_whole_extent_until_the_sweep(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=16 * 4096)
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


def test_a_new_bit_also_reserves_the_extents_ahead(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4 * 4096, ahead=2)
    regions, new = bm.mark(5 * 4096, 4096)
    assert new and bm.dirty() == list(range(4, 16))  # its extent and the two after it
    durable(bm)
    # a sequential writer crossing into the next extent finds its bit durable: no msync to wait for
    assert bm.mark(8 * 4096, 4096)[1] is False
    bm.release(regions)
    bm.sweep()
    assert bm.dirty() == [8]  # reservations nobody wrote are cleared; the write in flight stays


def test_reservations_stop_at_the_end_of_the_volume(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 10 * 4096, granule=4096, extent=4 * 4096, ahead=3)
    bm.mark(9 * 4096, 1)
    assert bm.dirty() == [8, 9]


def test_a_write_failed_while_an_earlier_event_flies_stays_dirty_until_resent(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    """A sync block of region 0 is in flight; a write to region 0 then goes unsent (the volume is
    ahead, or its event was refused). The block's ack must not clear the region: its content now
    differs from what Kafka got (found by bench/tapper.py's replay check, async catch-up)."""
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    block, _ = bm.mark(0, 4096, resend=True)
    write, _ = bm.mark(100, 10)
    bm.fail(write)
    bm.release(block)
    bm.sweep()
    assert bm.dirty() == [0] and bm.orphans() == [0]
    resend, _ = bm.mark(0, 4096, resend=True)  # the catch-up reads it after the failure
    bm.release(resend)
    bm.sweep()
    assert bm.dirty() == [] and bm.orphans() == []


def test_a_refused_range_outlives_the_ack_of_an_event_sent_before(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    earlier, _ = bm.mark(0, 4096)
    bm.set_dirty(0, 10)  # a later event of the region was refused (sync mode)
    bm.release(earlier)
    bm.sweep()
    assert bm.orphans() == [0]


def test_a_released_region_stays_hot_until_it_cooled(
    tmp_path: Path, Bitmap: type[DirtyBitmap]
) -> None:
    """The periodic sweep lets a region cool first: written again soon, it needs no new msync."""
    bm = Bitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    regions, wait = bm.mark(0, 4096)
    assert wait
    durable(bm)
    bm.release(regions)
    assert bm.sweep(cool_s=3600) == 0 and bm.dirty() == [0]
    again, wait = bm.mark(0, 4096)
    assert not wait  # still set and durable: the write may be answered at once
    bm.release(again)
    assert bm.orphans() == []
    assert bm.sweep() == 1 and bm.dirty() == []  # a stop or a recovery sweeps everything


def test_both_implementations_agree_on_random_operations(tmp_path: Path) -> None:
    """The same random marks, syncs, acks, failures, refusals and sweeps on the Python bitmap and
    the compiled one give the same answers and the same file."""
    import random

    rng = random.Random(13)
    size = 3 * (1 << 20) + 5000
    maps = [
        cls(tmp_path / f"{name}.dirty", size, granule=4096, extent=4 * 4096, ahead=1)
        for name, cls in sorted(IMPLEMENTATIONS.items())
    ]
    held: list[range] = []
    for _ in range(3000):
        op = rng.random()
        if op < 0.4:
            offset = rng.randrange(size)
            length = rng.randint(1, min(200_000, size - offset))
            resend = rng.random() < 0.2
            answers = [bm.mark(offset, length, resend) for bm in maps]
            assert answers[0] == answers[1]
            held.append(answers[0][0])
        elif op < 0.6 and held:
            regions = held.pop(rng.randrange(len(held)))
            for bm in maps:
                bm.release(regions)
        elif op < 0.65 and held:
            regions = held.pop(rng.randrange(len(held)))
            for bm in maps:
                bm.fail(regions)
        elif op < 0.75:
            assert len({bm.begin_sync() for bm in maps}) == 1
            for bm in maps:
                bm.end_sync()
        elif op < 0.8:
            offset, length = rng.randrange(size), rng.randint(1, 50_000)
            for bm in maps:
                bm.set_dirty(offset, length)
        elif op < 0.9:
            assert len({bm.sweep() for bm in maps}) == 1
        else:
            assert maps[0].orphans() == maps[1].orphans()
            assert maps[0].dirty_ranges() == maps[1].dirty_ranges()
            assert maps[0].dirty_bytes() == maps[1].dirty_bytes()
    for bm in maps:
        bm.close()
    files = [(tmp_path / f"{name}.dirty").read_bytes() for name in sorted(IMPLEMENTATIONS)]
    assert files[0] == files[1] and any(files[0])


def test_a_closed_native_bitmap_refuses_instead_of_touching_freed_memory(tmp_path: Path) -> None:
    bm = native.NativeDirtyBitmap(tmp_path / "v.dirty", 1 << 20, granule=4096, extent=4096)
    bm.close()
    with pytest.raises(ValueError, match="closed"):
        bm.mark(0, 4096)

"""Async mode's catch-up after the volume went ahead (no broker: doubles).

While more than one backlog's worth of regions is left to resend, writes keep only marking the
bitmap: streaming them beside the catch-up would send their regions twice and cost the writer the
producer's CPU. Once what is left fits in one backlog, writes stream again and a last pass sends
the rest; the catch-up ends only when no orphan is left.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.modes import AsyncMode

from .test_local_faults import AckingStream

GRANULE = 64 * 1024
SIZE = 64 * GRANULE
BACKLOG = 8 * GRANULE


class PassHost:
    """Records each catch-up pass (whether writes were ahead during it, the bytes it resent); the
    first `rewrites` passes see a writer dirty `dirtied` regions behind the pass."""

    name = "v1"

    def __init__(self, bitmap: DirtyBitmap, rewrites: int, dirtied: int) -> None:
        self.bitmap, self.rewrites, self.dirtied = bitmap, rewrites, dirtied
        self.mode: AsyncMode | None = None
        self.passes: list[tuple[bool, int]] = []

    async def sync_regions(self, kind: str, ranges: list[tuple[int, int]]) -> int:
        assert kind == "DELTA" and self.mode is not None
        sent = 0
        for a, b in ranges:
            regions, _ = self.bitmap.mark(a, b - a, resend=True)
            self.bitmap.release(regions)  # read and acked
            sent += b - a
        self.passes.append((self.mode.ahead, sent))
        if len(self.passes) <= self.rewrites:  # writes while ahead only mark (AsyncMode._write)
            regions, _ = self.bitmap.mark(0, self.dirtied * GRANULE)
            self.bitmap.fail(regions)
        return sent


def catch_up(tmp_path: Path, rewrites: int, dirtied: int) -> tuple[AsyncMode, PassHost]:
    bitmap = DirtyBitmap(tmp_path / "v1.dirty", SIZE, GRANULE, GRANULE)
    host = PassHost(bitmap, rewrites, dirtied)
    mode = AsyncMode(host, None, AckingStream(), bitmap, BACKLOG)  # type: ignore[arg-type]
    host.mode = mode
    regions, _ = bitmap.mark(0, SIZE)  # the whole volume written while ahead
    bitmap.fail(regions)

    async def main() -> None:
        mode.go_ahead()
        assert mode._catching_up is not None
        await asyncio.wait_for(mode._catching_up, 5)

    asyncio.run(main())
    return mode, host


def test_writes_stay_ahead_while_more_than_a_backlog_is_left_to_resend(tmp_path: Path) -> None:
    # two passes see the writer rewrite half the volume behind them, then one a backlog's worth
    mode, host = catch_up(tmp_path, rewrites=2, dirtied=32)
    assert host.passes[:3] == [(True, SIZE), (True, 32 * GRANULE), (True, 32 * GRANULE)]
    assert host.passes[3:] == [], "no orphan was left after the third pass"
    assert mode.ahead is False
    assert mode.bitmap.orphans() == []


def test_writes_stream_again_once_the_rest_fits_in_one_backlog(tmp_path: Path) -> None:
    mode, host = catch_up(tmp_path, rewrites=1, dirtied=8)  # 8 regions = one backlog
    assert host.passes == [(True, SIZE), (False, 8 * GRANULE)]
    assert mode.ahead is False
    assert mode.bitmap.orphans() == []

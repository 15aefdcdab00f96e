"""What the original site wrote after a checkpoint (pure): the regions a reverse must undo.

Counted in granules of the tappers' dirty bitmap, so the stream's writes and the bitmap's marks add
up to one set, and the recovery site resends whole granules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GRANULE = 64 * 1024  # the tappers' dirty-bitmap granule (TapperSettings default)
CHANGES = ("Write", "Zero", "SyncBlock")


def mark(granules: set[int], start: int, end: int, granule: int = GRANULE) -> None:
    """Add the granules that byte range [start, end) touches."""
    granules.update(range(start // granule, -(-end // granule)))


def written_after(
    records: Iterable[Mapping[str, Any]], cp: str, volumes: Iterable[str], granule: int = GRANULE
) -> tuple[dict[str, set[int]], list[str]]:
    """Per volume, the granules a stream's records changed after checkpoint `cp`'s marker; and the
    volumes whose stream never showed that marker (what changed there after it is unknown)."""
    granules: dict[str, set[int]] = {v: set() for v in volumes}
    after: set[str] = set()
    for rec in records:
        vol = rec["volume"]
        if vol not in granules:
            continue
        kind, body = rec["body"]
        if kind == "Checkpoint" and body["id"] == cp:
            after.add(vol)
        elif vol in after and kind in CHANGES:
            mark(granules[vol], body["offset"], body["offset"] + body["length"], granule)
    return granules, [v for v in granules if v not in after]


def to_ranges(granules: Iterable[int], size: int, granule: int = GRANULE) -> list[tuple[int, int]]:
    """Granules as coalesced byte ranges (start, end), the last one cut at the volume's size."""
    ranges: list[tuple[int, int]] = []
    for r in sorted(granules):
        a, b = r * granule, min(size, (r + 1) * granule)
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return ranges


def resync_args(delta: Mapping[str, list[tuple[int, int]]]) -> dict[str, str]:
    """A RESYNC Command's args: per volume with regions, `a-b,c-d`."""
    return {v: ",".join(f"{a}-{b}" for a, b in r) for v, r in delta.items() if r}

"""What the original site wrote after a checkpoint, from its stream's records (no broker)."""

from __future__ import annotations

from typing import Any

from tapstream.site_manager.delta import GRANULE, mark, resync_args, to_ranges, written_after

G = GRANULE


def rec(volume: str, kind: str, **body: Any) -> dict[str, Any]:
    return {"volume": volume, "body": (kind, body)}


def test_only_changes_after_the_checkpoint_marker_count() -> None:
    records = [
        rec("a", "Write", offset=0, length=10),  # before the marker: the other site has it
        rec("a", "Checkpoint", id="cp0"),
        rec("a", "Write", offset=G + 1, length=1),
        rec("a", "Checkpoint", id="cp1"),
        rec("a", "Zero", offset=3 * G, length=2 * G),
        rec("a", "SyncBlock", offset=5 * G - 1, length=2),  # straddles two granules
        rec("b", "Checkpoint", id="cp1"),
        rec("c", "Write", offset=0, length=1),  # not a volume of the group
    ]
    granules, missing = written_after(records, "cp1", ["a", "b"])
    assert granules == {"a": {3, 4, 5}, "b": set()}
    assert missing == []


def test_a_volume_whose_stream_lacks_the_marker_is_unknown() -> None:
    granules, missing = written_after([rec("a", "Checkpoint", id="cp1")], "cp1", ["a", "b"])
    assert missing == ["b"] and granules == {"a": set(), "b": set()}


def test_ranges_coalesce_and_stop_at_the_volume_size() -> None:
    gs: set[int] = set()
    mark(gs, 0, 1)
    mark(gs, G, 2 * G)  # an exact granule: only that one
    mark(gs, 4 * G + 5, 4 * G + 6)
    assert gs == {0, 1, 4}
    assert to_ranges(gs, 4 * G + 100) == [(0, 2 * G), (4 * G, 4 * G + 100)]
    assert to_ranges(set(), 10) == []
    assert resync_args({"a": [(0, G), (2 * G, 3 * G)], "b": []}) == {"a": f"0-{G},{2 * G}-{3 * G}"}

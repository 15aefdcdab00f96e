"""Which decoded DiskEvents the journal refuses to index (they go to the dead-letter topic)."""

from __future__ import annotations

from typing import Any

import pytest

from tapstream.journal.rows import unusable

HEADER = {"volume": "disk0", "seq": 1, "ts": 1, "host": "hv1", "group": "g1"}


def event(body: tuple[str, dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {**HEADER, **fields, "body": body}


WRITE = ("Write", {"offset": 0, "length": 4, "data": b"abcd", "checksum": 0})


def test_a_plain_event_of_the_group_is_usable() -> None:
    assert unusable(event(WRITE), "g1") is None
    assert unusable(event(("Flush", {"fua": False}), seq=9), "g1") is None


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (event(WRITE, group="other"), "group 'other'"),
        (event(WRITE, volume=""), "no volume"),
        (event(WRITE, seq=0), "seq 0"),
        (event(("Zero", {"offset": -1, "length": 4, "trim": False})), "Zero at offset -1"),
        (event(("Checkpoint", {"id": "", "ts": 1, "tag": None, "volumes": []})), "without an id"),
    ],
    ids=["foreign-group", "no-volume", "seq-0", "negative-offset", "checkpoint-without-id"],
)
def test_nonsense_for_the_index_is_refused(record: dict[str, Any], says: str) -> None:
    why = unusable(record, "g1")
    assert why is not None and says in why

"""Pure mapping of DiskEvents to index rows (no I/O)."""

from __future__ import annotations

from typing import Any, NamedTuple


class EventRow(NamedTuple):
    group_name: str
    volume: str
    seq: int
    kind: str
    off: int
    len: int
    ts: int
    topic: str
    kpartition: int
    koffset: int
    checksum: int | None


class CheckpointRow(NamedTuple):
    group_name: str
    id: str
    tag: str | None
    ts: int
    volume: str
    seq: int
    volume_size: int
    volumes: list[str]


def to_rows(
    record: dict[str, Any], topic: str, partition: int, offset: int
) -> tuple[EventRow, CheckpointRow | None]:
    kind, body = record["body"]
    off = int(body.get("offset", 0)) if kind in ("Write", "Zero", "SyncBlock") else 0
    length = int(body.get("length", 0)) if kind in ("Write", "Zero", "SyncBlock") else 0
    event = EventRow(
        record["group"],
        record["volume"],
        record["seq"],
        kind,
        off,
        length,
        record["ts"],
        topic,
        partition,
        offset,
        body.get("checksum"),
    )
    cp = None
    if kind == "Checkpoint":
        cp = CheckpointRow(
            record["group"],
            body["id"],
            body.get("tag"),
            body["ts"],
            record["volume"],
            record["seq"],
            int(body.get("volume_size", 0)),
            list(body.get("volumes", [])),
        )
    return event, cp

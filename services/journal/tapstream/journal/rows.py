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


def unusable(record: dict[str, Any], group: str) -> str | None:
    """Why a decoded DiskEvent of `group`'s write topic cannot be indexed, or None when it can.

    Avro guarantees the types; these are the values the index (and restore after it) relies on."""
    if record["group"] != group:
        return f"group {record['group']!r} in the write topic of group {group!r}"
    if not record["volume"]:
        return "no volume"
    if record["seq"] < 1:
        return f"seq {record['seq']} (seqs start at 1)"
    kind, body = record["body"]
    if kind in ("Write", "Zero", "SyncBlock") and (body["offset"] < 0 or body["length"] < 0):
        return f"{kind} at offset {body['offset']} of length {body['length']}"
    if kind == "Checkpoint" and not body["id"]:
        return "a Checkpoint without an id"
    return None

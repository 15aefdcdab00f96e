"""What the VDSA's applier and reverse protection's applier share when they read a write stream:
the volume a record's key names, and the halt an undecodable record of that volume means (its next
event may be in it: stop the volume rather than guess). The verdicts themselves are
core.contract's `Cursor`."""

from __future__ import annotations

from tapstream.core.contract import Cursor, Halt
from tapstream.core.dlq import Poison
from tapstream.core.names import valid_name


def volume_key(key: bytes | None) -> str | None:
    """The volume a record's key names, if it is a valid volume name."""
    try:
        name = key.decode() if key is not None else None
    except UnicodeDecodeError:
        return None
    return name if valid_name(name) else None


def undecodable(topic: str, partition: int, offset: int, poison: Poison, cursor: Cursor) -> Halt:
    """The halt of `cursor`'s volume at its next event, for an undecodable record at `offset`."""
    return Halt("undecodable", f"{topic}[{partition}]@{offset}: {poison.error}", cursor.seq + 1)

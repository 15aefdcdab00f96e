"""The stream contract every applier enforces (DESIGN §6, "Halt, never skip"). Pure: no I/O.

Per volume, events arrive with seq 1, 2, 3, ... A consumer that turns them into bytes (the recovery
VDSA, reverse protection, replay, restore) keeps a `Cursor` and asks it about each record:

- seq at or below the cursor: a redelivery, skipped (idempotent);
- the next seq: applied, if a Write/SyncBlock's data matches its length and CRC-32C and a
  SyncBlock/SyncEnd belongs to a sync that was opened (SyncStart) and not yet closed;
- anything else raises `Halt`: the volume stops at its last good event, its replica stays exact
  for that point, and only a sync that rewrites the whole volume (a DELTA whose bytes_total covers
  the volume, or any sync on a replica that was never written) lets it move on again; such a sync
  right after a hole heals it without halting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import crc32c


class Verdict(StrEnum):
    """What an applier does with a record (`Cursor.check`)."""

    APPLY = "apply"  # the next event, sound: apply it, then `advance`
    DUPLICATE = "duplicate"  # at or below the cursor: already applied, skip
    HALTED = "halted"  # the volume is halted and this does not heal it: skip
    HEAL = "heal"  # a sync that rewrites everything: apply it, lifting the halt or crossing a gap


OPEN_SYNCS_REMEMBERED = 32  # a tapper that crashed mid-sync never closes it; forget the oldest


class StreamError(RuntimeError):
    """The stream is broken: a seq gap or a checksum mismatch (data loss or corruption)."""


class HaltReason(StrEnum):
    """Why a volume halted: in Progress.halted, the halt Alert, metric labels and the saved cursor."""

    GAP = "gap"  # a seq is missing
    CHECKSUM = "checksum"  # data does not match its length or CRC-32C
    BRACKET = "bracket"  # a SyncBlock/SyncEnd without its SyncStart
    UNDECODABLE = "undecodable"  # a record of the volume the codec cannot read


class Halt(StreamError):
    """A volume must stop here, for `reason`."""

    def __init__(self, reason: HaltReason | str, detail: str, seq: int = 0) -> None:
        self.reason = HaltReason(reason)  # a str too: a halt is rebuilt from the saved cursor
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail
        self.seq = seq


@dataclass
class Cursor:
    """Where one volume's applier stands: last applied seq, open syncs, and a halt if any."""

    volume: str = ""
    seq: int = 0
    open_syncs: list[str] = field(default_factory=list)
    halt: dict[str, Any] | None = None  # {"reason", "detail", "seq"}: set while halted

    def check(self, record: dict[str, Any]) -> Verdict:
        """What to do with `record` (this volume's DiskEvent); raises Halt. Changes nothing."""
        seq = record["seq"]
        if seq <= self.seq:
            return Verdict.DUPLICATE
        branch, body = record["body"]
        if self.halt is not None or seq != self.seq + 1:
            # A sync that rewrites everything makes whatever came before it irrelevant: a hole
            # right before it (Kafka lost events, the tapper resends the volume) heals at once.
            if heals(branch, body, blank=self.seq == 0):
                return Verdict.HEAL
            if self.halt is not None:
                return Verdict.HALTED
        if seq != self.seq + 1:
            raise Halt(
                HaltReason.GAP,
                f"{self.volume}: expected seq {self.seq + 1}, got {seq}: "
                f"{seq - self.seq - 1} event(s) missing",
                seq,
            )
        verify_body(branch, body, seq)
        if branch in ("SyncBlock", "SyncEnd") and body["sync_id"] not in self.open_syncs:
            raise Halt(
                HaltReason.BRACKET,
                f"{self.volume}: {branch} of sync {body['sync_id']} at seq {seq} without its "
                "SyncStart",
                seq,
            )
        return Verdict.APPLY

    def advance(self, record: dict[str, Any]) -> None:
        """After `record` was applied (verdict apply or heal): move past it."""
        branch, body = record["body"]
        if branch == "SyncStart":
            if self.halt is not None or self.seq + 1 != record["seq"]:
                self.open_syncs = []  # a healing sync starts the stream afresh
            self.halt = None
            self.open_syncs = [*self.open_syncs, body["sync_id"]][-OPEN_SYNCS_REMEMBERED:]
        elif branch == "SyncEnd":
            self.open_syncs = [s for s in self.open_syncs if s != body["sync_id"]]
        self.seq = record["seq"]

    def stop(self, halt: Halt) -> None:
        """Halt here: nothing more is applied until a healing sync."""
        self.halt = {"reason": halt.reason, "detail": halt.detail, "seq": halt.seq}

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "open_syncs": self.open_syncs, "halt": self.halt}

    @classmethod
    def from_json(cls, volume: str, data: dict[str, Any]) -> Cursor:
        return cls(volume, data.get("seq", 0), list(data.get("open_syncs") or []), data.get("halt"))


def heals(branch: str, body: dict[str, Any], blank: bool) -> bool:
    """A SyncStart that rewrites everything the replica could hold wrong: a DELTA over the whole
    volume, or any sync on a replica never written (an INITIAL sync skips only zero blocks)."""
    if branch != "SyncStart":
        return False
    return blank or (body["kind"] == "DELTA" and body["bytes_total"] >= body["volume_size"])


def verify_body(branch: str, body: dict[str, Any], seq: int = 0) -> None:
    """A Write/SyncBlock carries exactly `length` bytes whose CRC-32C is `checksum`."""
    if branch in ("Write", "SyncBlock"):
        data = body["data"]
        if len(data) != body["length"] or crc32c.crc32c(data) != body["checksum"]:
            raise Halt(
                HaltReason.CHECKSUM,
                f"{branch} at offset {body['offset']} (seq {seq}): data does not match its "
                "length or CRC-32C",
                seq,
            )

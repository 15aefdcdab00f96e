"""Kept checkpoints: the CHECKPOINT_TAG command on tapstream.control and what it decides. Pure logic.

An analyzer (after an alert) or an operator asks that a checkpoint get a tag and be kept. The
journal records the tag; the recovery VDSA holds each replica at the checkpoint's marker while it is
kept, so the checkpoint stays restorable (from the replica alone) however long ago it was taken.
`keep: "false"` in args releases it; per (group, checkpoint, tag) the command with the later ts wins.
A release without a tag releases every tag of the checkpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tapstream.core.records import Command, CommandKind

DEFAULT_TAG = "kept"


@dataclass(frozen=True)
class TagRequest:
    group: str
    checkpoint_id: str
    tag: str | None  # None only on a release of every tag
    keep: bool
    reason: str
    ts: int
    sender: str
    volumes: tuple[str, ...] = ()


def parse_tag_command(cmd: Mapping[str, Any]) -> TagRequest | None:
    """The request a decoded Command carries, or None when it is not a usable CHECKPOINT_TAG."""
    if cmd.get("kind") != CommandKind.CHECKPOINT_TAG or not cmd.get("checkpoint_id"):
        return None
    args = cmd.get("args") or {}
    keep = str(args.get("keep", "true")).strip().lower() not in ("false", "0", "no")
    tag = cmd.get("tag") or (DEFAULT_TAG if keep else None)
    return TagRequest(
        cmd["group"],
        cmd["checkpoint_id"],
        tag,
        keep,
        args.get("reason", ""),
        int(cmd["ts"]),
        cmd.get("sender", ""),
        tuple(cmd.get("volumes") or ()),
    )


def tag_command(
    group: str,
    checkpoint_id: str,
    tag: str | None,
    keep: bool,
    sender: str,
    ts: int,
    reason: str = "",
    extra: dict[str, str] | None = None,
) -> Command:
    """A CHECKPOINT_TAG Command record (the same shape the analyzer publishes)."""
    return {
        "id": str(uuid.uuid4()),
        "group": group,
        "kind": CommandKind.CHECKPOINT_TAG,
        "sender": sender,
        "ts": ts,
        "checkpoint_id": checkpoint_id,
        "tag": tag,
        "volumes": [],
        "args": {**(extra or {}), "reason": reason, "keep": "true" if keep else "false"},
    }


@dataclass
class Keeps:
    """Which checkpoints are kept, from the CHECKPOINT_TAG commands seen so far (any order)."""

    tags: dict[tuple[str, str], dict[str, tuple[bool, int]]] = field(default_factory=dict)
    released_all: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, cp) -> ts

    def apply(self, req: TagRequest) -> bool:
        """Record `req`; True when it changed whether the checkpoint is kept."""
        key = (req.group, req.checkpoint_id)
        before = self.kept(*key)
        if req.tag is None:
            self.released_all[key] = max(req.ts, self.released_all.get(key, req.ts))
        else:
            tags = self.tags.setdefault(key, {})
            old = tags.get(req.tag)
            if old is None or req.ts >= old[1]:
                tags[req.tag] = (req.keep, req.ts)
        return self.kept(*key) != before

    def kept(self, group: str, checkpoint_id: str) -> bool:
        key = (group, checkpoint_id)
        released = self.released_all.get(key, -1)
        return any(keep and ts > released for keep, ts in self.tags.get(key, {}).values())

    def kept_ids(self, group: str) -> set[str]:
        return {cp for (g, cp) in self.tags if g == group and self.kept(g, cp)}

    def dump(self, group: str) -> dict[str, dict[str, list[Any]]]:
        """The kept checkpoints of `group` and their kept tags: {checkpoint: {tag: [true, ts]}}."""
        return {
            cp: {
                tag: [True, ts]
                for tag, (keep, ts) in self.tags[(group, cp)].items()
                if keep and ts > self.released_all.get((group, cp), -1)
            }
            for cp in sorted(self.kept_ids(group))
        }

    def load(self, group: str, dumped: dict[str, dict[str, list[Any]]]) -> None:
        """Merge what `dump` gave; commands with a later ts (a release) still win over it."""
        for cp, tags in dumped.items():
            for tag, (keep, ts) in tags.items():
                self.apply(TagRequest(group, cp, tag, bool(keep), "", int(ts), "saved"))


class Action(StrEnum):
    """What the recovery VDSA does with a volume's next record (`decide`)."""

    APPLY = "apply"
    SKIP = "skip"  # applied before
    APPLY_AND_HOLD = "apply-and-hold"  # a kept checkpoint's marker: apply it and stop there
    HOLD = "hold"  # that marker again after a restart: stop without applying


def decide(
    branch: str, body: dict[str, Any], seq: int, applied_seq: int, kept: Keeps, group: str
) -> Action:
    """What the recovery VDSA does with the next record of a volume.

    The marker of a kept checkpoint is applied (it changes no bytes, but it is the replica's position
    then) and the volume stops there: the replica then holds exactly the checkpoint. Re-reading the
    marker after a restart (seq == applied_seq) holds again rather than moving on.
    """
    if branch == "Checkpoint" and seq >= applied_seq and kept.kept(group, body["id"]):
        return Action.APPLY_AND_HOLD if seq > applied_seq else Action.HOLD
    return Action.APPLY if seq > applied_seq else Action.SKIP

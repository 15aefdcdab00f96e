"""Domain events of the site manager's aggregates: frozen dataclasses, named explicitly.

An event is stored as a `DomainEvent` record (schemas/DomainEvent.avsc): its class name is `type`, its
fields are `payload_json`. `Recorded` is the envelope: which aggregate, which version, when, where.
Old payload shapes are upcast in `from_payload` (unknown fields dropped, missing ones defaulted).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of every domain event; `aggregate_type` says which aggregate it belongs to."""

    aggregate_type: ClassVar[str] = ""


# --- sites --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteRegistered(Event):
    aggregate_type: ClassVar[str] = "site"
    name: str
    role: str  # protected | recovery (the role it was set up with; groups say which side is active)
    api_url: str = ""
    bootstrap: str = ""


# --- protection groups ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupCreated(Event):
    aggregate_type: ClassVar[str] = "group"
    name: str
    mode: str = "sync"
    rpo_target_s: float = 30.0
    journal_history_s: float = 3600.0
    checkpoint_interval_s: float = 5.0
    source_site: str = "protected"
    target_site: str = "recovery"


@dataclass(frozen=True)
class GroupSettingsChanged(Event):
    aggregate_type: ClassVar[str] = "group"
    mode: str
    rpo_target_s: float
    journal_history_s: float
    checkpoint_interval_s: float


@dataclass(frozen=True)
class VmAdded(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str
    target_vm: str = ""


@dataclass(frozen=True)
class VmRemoved(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str


@dataclass(frozen=True)
class TargetPaired(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str
    target_vm: str


@dataclass(frozen=True)
class VmDefined(Event):
    """How the VM comes up at the recovery site (a `VmSpec` dict); replaces an earlier one."""

    aggregate_type: ClassVar[str] = "group"
    vm: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VmUndefined(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str


@dataclass(frozen=True)
class VolumeAdded(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str
    volume: str
    path: str
    size: int = 0
    target_path: str = ""


@dataclass(frozen=True)
class VolumeRemoved(Event):
    aggregate_type: ClassVar[str] = "group"
    vm: str
    volume: str


@dataclass(frozen=True)
class ProtectionPaused(Event):
    aggregate_type: ClassVar[str] = "group"
    reason: str = ""


@dataclass(frozen=True)
class ProtectionResumed(Event):
    aggregate_type: ClassVar[str] = "group"


@dataclass(frozen=True)
class WritesFenced(Event):
    """The tappers of the group at `site` refuse writes until `owner` (an operation) lifts it."""

    aggregate_type: ClassVar[str] = "group"
    site: str
    owner: str = ""


@dataclass(frozen=True)
class WritesUnfenced(Event):
    aggregate_type: ClassVar[str] = "group"
    site: str
    owner: str = ""  # "" when an operator lifted every fence


@dataclass(frozen=True)
class CheckpointTaken(Event):
    aggregate_type: ClassVar[str] = "checkpoints"
    checkpoint_id: str
    tag: str = ""
    site: str = "protected"


@dataclass(frozen=True)
class FailoverTestStarted(Event):
    aggregate_type: ClassVar[str] = "group"
    operation: str
    checkpoint_id: str
    exports: dict[str, str] = field(default_factory=dict)  # volume -> nbd:// URI


@dataclass(frozen=True)
class FailoverTestStopped(Event):
    aggregate_type: ClassVar[str] = "group"
    operation: str


@dataclass(frozen=True)
class FailoverStarted(Event):
    aggregate_type: ClassVar[str] = "group"
    operation: str
    kind: str  # failover | move | failback


@dataclass(frozen=True)
class FailedOver(Event):
    """The recovery site now serves the group's volumes at `checkpoint_id` (kind failover or move)."""

    aggregate_type: ClassVar[str] = "group"
    operation: str
    kind: str
    checkpoint_id: str
    exports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FailoverAborted(Event):
    aggregate_type: ClassVar[str] = "group"
    operation: str
    error: str


@dataclass(frozen=True)
class ReverseProtectionStarted(Event):
    """The recovery site is the protected one; its writes flow back to the original site."""

    aggregate_type: ClassVar[str] = "group"
    operation: str
    delta_bytes: int = 0


@dataclass(frozen=True)
class FailedBack(Event):
    """The original site serves the group again, with the data written at the recovery site."""

    aggregate_type: ClassVar[str] = "group"
    operation: str
    checkpoint_id: str
    exports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupDeleted(Event):
    aggregate_type: ClassVar[str] = "group"


# --- the VMs a site's driver runs for a group (one log per group and site: a single writer) ---
@dataclass(frozen=True)
class VmsReported(Event):
    aggregate_type: ClassVar[str] = "vms"
    site: str
    vms: dict[str, dict[str, str]] = field(default_factory=dict)  # domain -> {vm, purpose, state}
    operation: str = ""


# --- long-running operations ---------------------------------------------------------------------
@dataclass(frozen=True)
class OperationStarted(Event):
    aggregate_type: ClassVar[str] = "operation"
    kind: str
    group: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationProgressed(Event):
    aggregate_type: ClassVar[str] = "operation"
    step: str
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class OperationSucceeded(Event):
    aggregate_type: ClassVar[str] = "operation"
    result: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationFailed(Event):
    aggregate_type: ClassVar[str] = "operation"
    error: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        SiteRegistered, GroupCreated, GroupSettingsChanged, VmAdded, VmRemoved, TargetPaired, VolumeAdded,
        VolumeRemoved, ProtectionPaused, ProtectionResumed, WritesFenced, WritesUnfenced, CheckpointTaken, FailoverTestStarted,
        FailoverTestStopped, FailoverStarted, FailedOver, FailoverAborted, ReverseProtectionStarted, FailedBack,
        GroupDeleted, OperationStarted, OperationProgressed, OperationSucceeded, OperationFailed,
        VmDefined, VmUndefined, VmsReported,
    )
}  # fmt: skip


class UnknownEvent(ValueError):
    """An event type this version does not know (written by a newer site manager): upgrade."""


def to_payload(event: Event) -> str:
    return json.dumps(dataclasses.asdict(event), sort_keys=True, separators=(",", ":"))


def from_payload(type_name: str, payload: str) -> Event:
    """Rebuild an event; fields this version does not know are dropped, missing ones defaulted."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEvent(
            f"unknown event type {type_name!r}: written by a newer site manager? upgrade this one"
        )
    data: dict[str, Any] = json.loads(payload)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Recorded:
    """An event as stored: the envelope around the domain event."""

    id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    ts: int  # microseconds
    site: str
    event: Event
    prev: str = (
        ""  # id of the event at version - 1: what this one was decided on ("" for the first)
    )
    # Who decided it: an API token's name, or "system" (the site manager itself); None for events
    # recorded before actors were (DomainEvent v1).
    actor: str | None = None

    @property
    def type(self) -> str:
        return type(self.event).__name__

    def to_record(self) -> dict[str, Any]:
        """The `DomainEvent` Avro record."""
        return {
            "id": self.id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "type": self.type,
            "ts": self.ts,
            "site": self.site,
            "payload_json": to_payload(self.event),
            "meta": {"prev": self.prev} if self.prev else {},
            "actor": self.actor,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Recorded:
        return cls(
            rec["id"],
            rec["aggregate_type"],
            rec["aggregate_id"],
            rec["version"],
            rec["ts"],
            rec["site"],
            from_payload(rec["type"], rec["payload_json"]),
            (rec.get("meta") or {}).get("prev", ""),
            rec.get("actor"),
        )

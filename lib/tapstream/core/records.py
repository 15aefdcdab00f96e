"""The Avro records of `schemas/*.avsc` as Python types: what the codec decodes and encodes.

One `TypedDict` per record and per `DiskEvent.body` branch, named as in the schema. A field with a
default in the schema is `NotRequired`: a writer may leave it out (the codec fills the default),
while a decoded record always has it. Timestamps are int microseconds, a union branch is a
`(branch name, fields)` tuple, an Avro enum reads as its symbol (a plain `str`; the StrEnums below
compare equal to it). `tests/unit/core/test_records.py` checks every name, field and type here
against the `.avsc` files, so a schema change that forgets this module fails there.
"""

# No `from __future__ import annotations`: TypedDict must see NotRequired[...] itself (Python 3.11).
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

# --- DiskEvent -------------------------------------------------------------------------------------


class SyncKind(StrEnum):
    INITIAL = "INITIAL"
    DELTA = "DELTA"


class Write(TypedDict):
    offset: int
    length: int
    data: bytes
    checksum: int  # CRC-32C of data, unsigned


class Zero(TypedDict):
    offset: int
    length: int
    trim: NotRequired[bool]


class Flush(TypedDict):
    fua: NotRequired[bool]


class Checkpoint(TypedDict):
    id: str
    ts: int
    tag: NotRequired[str | None]
    volumes: NotRequired[list[str]]
    volume_size: NotRequired[int]


class SyncStart(TypedDict):
    sync_id: str
    kind: str  # a SyncKind
    volume_size: int
    bytes_total: int


class SyncBlock(TypedDict):
    sync_id: str
    offset: int
    length: int
    data: bytes
    checksum: int


class SyncEnd(TypedDict):
    sync_id: str
    blocks: int
    bytes: int


# The body's branches, in the schema's union order.
BODIES: dict[str, type[Any]] = {
    "Write": Write,
    "Zero": Zero,
    "Flush": Flush,
    "Checkpoint": Checkpoint,
    "SyncStart": SyncStart,
    "SyncBlock": SyncBlock,
    "SyncEnd": SyncEnd,
}


class DiskEvent(TypedDict):
    volume: str
    seq: int
    ts: int
    host: str
    group: str
    # (branch, fields): the fields are the TypedDict BODIES[branch]; a plain dict here, since code
    # unpacks the pair and tests the branch name, which a type checker cannot follow.
    body: tuple[str, dict[str, Any]]


# --- Command ---------------------------------------------------------------------------------------


class CommandKind(StrEnum):
    """`Command.kind` (who sends and who obeys each: schemas/README.md, "Commands")."""

    UNKNOWN = "UNKNOWN"
    CHECKPOINT_PREPARE = "CHECKPOINT_PREPARE"
    CHECKPOINT_PREPARED = "CHECKPOINT_PREPARED"
    CHECKPOINT_COMMIT = "CHECKPOINT_COMMIT"
    CHECKPOINT_ABORT = "CHECKPOINT_ABORT"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    RESYNC = "RESYNC"
    START_PROTECTION = "START_PROTECTION"
    STOP_PROTECTION = "STOP_PROTECTION"
    ANNOUNCE = "ANNOUNCE"
    CHECKPOINT_TAG = "CHECKPOINT_TAG"


class Command(TypedDict):
    id: str
    group: str
    kind: str  # a CommandKind
    sender: str
    ts: int
    checkpoint_id: NotRequired[str | None]
    tag: NotRequired[str | None]
    volumes: NotRequired[list[str]]
    args: NotRequired[dict[str, str]]
    key_id: NotRequired[str | None]  # set by control_auth.sign
    signature: NotRequired[str | None]


# --- DomainEvent, Alert, Progress --------------------------------------------------------------------


class DomainEvent(TypedDict):
    id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    type: str
    ts: int
    site: str
    payload_json: str
    meta: NotRequired[dict[str, str]]
    actor: NotRequired[str | None]


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Alert(TypedDict):
    id: str
    kind: str
    group: str
    volume: str
    onset_ts: int
    detected_ts: int
    severity: str  # a Severity
    score: float
    encrypted_share: float
    last_clean_checkpoint: NotRequired[str | None]
    message: str
    details: NotRequired[dict[str, str]]


class ProgressSource(StrEnum):
    """`Progress.source`, the service that reports (a string in the schema, not an Avro enum)."""

    VDSA = "vdsa"  # the recovery VDSA: a volume's applied position, RPO, halts
    REPLICATOR = "replicator"  # MirrorMaker 2's lag for a whole group (volume "*")


class Progress(TypedDict):
    group: str
    volume: str
    site: str
    source: str  # a ProgressSource
    applied_seq: int
    applied_ts: int
    applied_offset: int
    newest_seq_seen: int
    rpo_seconds: float
    lag_records: int
    ts: int
    halted: NotRequired[str | None]  # "<HaltReason>: <detail>" while halted


# Every top-level record, by its schema name (core.codec.schemas.RECORDS).
RECORDS: dict[str, type[Any]] = {
    "DiskEvent": DiskEvent,
    "Command": Command,
    "DomainEvent": DomainEvent,
    "Alert": Alert,
    "Progress": Progress,
}
ENUMS: dict[str, type[StrEnum]] = {
    "SyncKind": SyncKind,
    "CommandKind": CommandKind,
    "Severity": Severity,
}

"""Commands to the site manager's aggregates: what an operator or an operation asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    """Base of every command."""


@dataclass(frozen=True)
class RegisterSite(Command):
    role: str
    api_url: str = ""
    bootstrap: str = ""


@dataclass(frozen=True)
class CreateGroup(Command):
    mode: str = "sync"
    rpo_target_s: float = 30.0
    journal_history_s: float = 3600.0
    checkpoint_interval_s: float = 5.0


@dataclass(frozen=True)
class ChangeGroupSettings(Command):
    mode: str | None = None
    rpo_target_s: float | None = None
    journal_history_s: float | None = None
    checkpoint_interval_s: float | None = None


@dataclass(frozen=True)
class AddVm(Command):
    vm: str
    target_vm: str = ""


@dataclass(frozen=True)
class RemoveVm(Command):
    vm: str


@dataclass(frozen=True)
class PairTarget(Command):
    vm: str
    target_vm: str


@dataclass(frozen=True)
class DefineVm(Command):
    """Set (or replace) how VM comes up at the recovery site: a `VmSpec` as a dict."""

    vm: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UndefineVm(Command):
    vm: str


@dataclass(frozen=True)
class ReportVms(Command):
    """What the VM driver at `site` did with the group's VMs: domain -> {vm, purpose, state}
    (state "gone" once a domain is destroyed and undefined)."""

    site: str
    vms: dict[str, dict[str, str]] = field(default_factory=dict)
    operation: str = ""


@dataclass(frozen=True)
class AddVolume(Command):
    vm: str
    volume: str
    path: str
    size: int = 0
    target_path: str = ""


@dataclass(frozen=True)
class RemoveVolume(Command):
    vm: str
    volume: str


@dataclass(frozen=True)
class PauseProtection(Command):
    reason: str = ""


@dataclass(frozen=True)
class ResumeProtection(Command):
    pass


@dataclass(frozen=True)
class RecordFence(Command):
    """Record that the tappers at `site` were told to refuse (fenced) or take writes again."""

    site: str
    owner: str
    fenced: bool


@dataclass(frozen=True)
class RecordCheckpoint(Command):
    checkpoint_id: str
    tag: str = ""
    site: str = "protected"


@dataclass(frozen=True)
class StartFailoverTest(Command):
    operation: str
    checkpoint_id: str
    exports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StopFailoverTest(Command):
    operation: str = ""


@dataclass(frozen=True)
class BeginFailover(Command):
    operation: str
    kind: str  # failover | move | failback


@dataclass(frozen=True)
class CompleteFailover(Command):
    operation: str
    checkpoint_id: str
    exports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AbortFailover(Command):
    operation: str
    error: str


@dataclass(frozen=True)
class StartReverse(Command):
    operation: str
    delta_bytes: int = 0


@dataclass(frozen=True)
class DeleteGroup(Command):
    pass


@dataclass(frozen=True)
class StartOperation(Command):
    kind: str
    group: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportProgress(Command):
    step: str
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class SucceedOperation(Command):
    result: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FailOperation(Command):
    error: str

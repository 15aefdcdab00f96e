"""The site manager's aggregates: plain classes, `decide(command) -> events` and `apply(event)`.

No I/O here. The application layer loads an aggregate (replaying its events), calls `decide`, and
appends the events with the version it loaded (optimistic concurrency: see `application.py`).
`state()` is the JSON the projection keeps; rebuilding from the events gives the same JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from tapstream.core.names import InvalidName, check_name, valid_name
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain import events as e
from tapstream.site_manager.domain.vm_spec import VmSpec

MODES = ("sync", "async")


class DomainError(ValueError):
    """A command breaks a rule; the message says what to do instead."""


class NotFound(DomainError):
    """The aggregate does not exist (or was deleted)."""


class Invalid(DomainError):
    """A value the command carries is not acceptable (a bad name, a path outside the allowed roots):
    the request is wrong, not the aggregate's state (REST: 422)."""


def _name(kind: str, value: str) -> None:
    """Names become Kafka keys and file names (replicas, promoted volumes, tapper state)."""
    try:
        check_name(kind, value)
    except InvalidName as exc:
        raise Invalid(str(exc)) from None


class Aggregate:
    type_name: ClassVar[str] = ""

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0

    def apply(self, event: e.Event) -> None:
        """Change state by one event; the version counts the events applied."""
        self._apply(event)
        self.version += 1

    def _apply(self, event: e.Event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def decide(self, command: c.Command) -> list[e.Event]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


# --- site ----------------------------------------------------------------------------------------
class Site(Aggregate):
    type_name = "site"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.role = ""
        self.api_url = ""
        self.bootstrap = ""

    def decide(self, command: c.Command) -> list[e.Event]:
        match command:
            case c.RegisterSite(role=role, api_url=url, bootstrap=bootstrap):
                if role not in ("protected", "recovery"):
                    raise DomainError(f"site role {role!r}: protected or recovery")
                if (self.role, self.api_url, self.bootstrap) == (role, url, bootstrap):
                    return []  # idempotent: every start registers
                return [e.SiteRegistered(self.id, role, url, bootstrap)]
        raise DomainError(f"a site does not take {type(command).__name__}")

    def _apply(self, event: e.Event) -> None:
        match event:
            case e.SiteRegistered():
                self.role, self.api_url, self.bootstrap = event.role, event.api_url, event.bootstrap

    def state(self) -> dict[str, Any]:
        return {
            "name": self.id,
            "role": self.role,
            "api_url": self.api_url,
            "bootstrap": self.bootstrap,
            "version": self.version,
        }


# --- protection group ----------------------------------------------------------------------------
@dataclass
class Volume:
    name: str
    path: str
    size: int = 0
    target_path: str = ""


@dataclass
class Vm:
    name: str
    target_vm: str = ""
    volumes: dict[str, Volume] = field(default_factory=dict)
    spec: VmSpec | None = None  # how it comes up at the recovery site; None: not started there


class GroupStatus(StrEnum):
    """A group's state; `active_site` says which site serves the volumes. The values are in the
    projection (Postgres) and the API: never change one."""

    PROTECTING = "protecting"
    PAUSED = "paused"
    FAILING_OVER = "failing_over"
    FAILED_OVER = "failed_over"
    REVERSE_PROTECTING = "reverse_protecting"
    FAILING_BACK = "failing_back"
    DELETED = "deleted"


# The names other modules use (a StrEnum member equals its value, so string comparisons still hold).
PROTECTING = GroupStatus.PROTECTING
PAUSED = GroupStatus.PAUSED
FAILING_OVER = GroupStatus.FAILING_OVER
FAILED_OVER = GroupStatus.FAILED_OVER
REVERSE_PROTECTING = GroupStatus.REVERSE_PROTECTING
FAILING_BACK = GroupStatus.FAILING_BACK
DELETED = GroupStatus.DELETED
FORWARD = (PROTECTING, PAUSED)


class ProtectionGroup(Aggregate):
    type_name = "group"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        # A GroupStatus ("" before GroupCreated); typed str while operations.py sets it from a str.
        self.status: str = ""
        self.mode = "sync"
        self.rpo_target_s = 30.0
        self.journal_history_s = 3600.0
        self.checkpoint_interval_s = 5.0
        self.source_site = "protected"
        self.target_site = "recovery"
        self.active_site = "protected"
        self.vms: dict[str, Vm] = {}
        self.test: dict[str, Any] | None = None  # running failover test
        self.operation: str | None = None  # running failover / move / failback
        self.pending_kind: str | None = None
        self.last_failover: dict[str, Any] | None = None
        self.exports: dict[str, str] = {}
        self.fenced: dict[str, str] = {}  # site -> owner of the write fence there

    # --- queries ---------------------------------------------------------------------------------
    def volumes(self) -> dict[str, Volume]:
        return {v.name: v for vm in self.vms.values() for v in vm.volumes.values()}

    def vm_of(self, volume: str) -> str | None:
        return next((vm.name for vm in self.vms.values() if volume in vm.volumes), None)

    # --- decide ----------------------------------------------------------------------------------
    def decide(self, command: c.Command) -> list[e.Event]:
        if isinstance(command, c.CreateGroup):
            return self._create(command)
        if self.version == 0 or self.status == DELETED:
            raise NotFound(
                f"no protection group {self.id!r}; create it with `tapstream group create {self.id}`"
            )
        match command:
            case c.ChangeGroupSettings():
                s = command
                new = (
                    s.mode or self.mode,
                    self._positive("rpo_target_s", s.rpo_target_s, self.rpo_target_s),
                    self._positive(
                        "journal_history_s", s.journal_history_s, self.journal_history_s
                    ),
                    self._positive(
                        "checkpoint_interval_s", s.checkpoint_interval_s, self.checkpoint_interval_s
                    ),
                )
                if new[0] not in MODES:
                    raise DomainError(f"mode {new[0]!r}: sync or async")
                if new == (
                    self.mode,
                    self.rpo_target_s,
                    self.journal_history_s,
                    self.checkpoint_interval_s,
                ):
                    return []
                return [e.GroupSettingsChanged(*new)]
            case c.AddVm(vm=vm, target_vm=target):
                self._membership_can_change()
                _name("VM", vm)
                if target:
                    _name("target VM", target)
                if vm in self.vms:
                    raise DomainError(f"VM {vm!r} is already in group {self.id!r}")
                return [e.VmAdded(vm, target)]
            case c.RemoveVm(vm=vm):
                self._membership_can_change()
                owner = self._vm(vm)
                return [*(e.VolumeRemoved(vm, v) for v in owner.volumes), e.VmRemoved(vm)]
            case c.DefineVm(vm=vm, spec=spec):
                owner = self._vm(vm)
                try:
                    parsed = VmSpec.parse(spec)
                except (TypeError, ValueError) as exc:
                    raise Invalid(f"VM {vm!r}: {exc}") from None
                missing = [d for d in parsed.disks if d not in owner.volumes]
                if missing:
                    raise DomainError(
                        f"VM {vm!r} has no volumes {missing}; add them first "
                        f"(`tapstream group add-volume {self.id} {vm} VOLUME PATH`)"
                    )
                return [] if owner.spec == parsed else [e.VmDefined(vm, parsed.to_dict())]
            case c.UndefineVm(vm=vm):
                return [e.VmUndefined(vm)] if self._vm(vm).spec is not None else []
            case c.RecordFence(site=site, owner=owner, fenced=True):
                return [] if self.fenced.get(site) == owner else [e.WritesFenced(site, owner)]
            case c.RecordFence(site=site, owner=owner, fenced=False):
                held = self.fenced.get(site)
                lifts = held is not None and (not owner or held == owner)
                return [e.WritesUnfenced(site, owner)] if lifts else []
            case c.PairTarget(vm=vm, target_vm=target):
                self._vm(vm)
                _name("target VM", target)
                return [e.TargetPaired(vm, target)] if self.vms[vm].target_vm != target else []
            case c.AddVolume(vm=vm, volume=volume, path=path, size=size, target_path=target_path):
                self._membership_can_change()
                _name("VM", vm)
                self._vm(vm)
                _name("volume", volume)
                if volume in self.volumes():
                    raise DomainError(
                        f"volume {volume!r} is already in group {self.id!r} (VM "
                        f"{self.vm_of(volume)!r}); volume names are unique in a group"
                    )
                if not path:
                    raise DomainError(
                        f"volume {volume!r} needs the path of its disk image at the protected site"
                    )
                if size < 0:
                    raise DomainError("size must be >= 0")
                return [e.VolumeAdded(vm, volume, path, size, target_path)]
            case c.RemoveVolume(vm=vm, volume=volume):
                self._membership_can_change()
                if volume not in self._vm(vm).volumes:
                    raise DomainError(
                        f"VM {vm!r} has no volume {volume!r}; see `tapstream group show {self.id}`"
                    )
                return [e.VolumeRemoved(vm, volume)]
            case c.PauseProtection(reason=reason):
                if self.status != PROTECTING:
                    raise DomainError(
                        f"group {self.id!r} is {self.status}, not protecting: nothing to pause"
                    )
                return [e.ProtectionPaused(reason)]
            case c.ResumeProtection():
                if self.status != PAUSED:
                    raise DomainError(
                        f"group {self.id!r} is {self.status}, not paused: nothing to resume"
                    )
                return [e.ProtectionResumed()]
            case c.StartFailoverTest(operation=op, checkpoint_id=cp, exports=exports):
                if self.status not in FORWARD:
                    raise DomainError(
                        f"group {self.id!r} is {self.status}: a failover test needs a protected "
                        "group replicating to the recovery site"
                    )
                if self.test is not None:
                    raise DomainError(
                        f"a failover test of {self.id!r} is running (operation "
                        f"{self.test['operation']}); stop it with `tapstream failover-test stop {self.id}`"
                    )
                if not self.volumes():
                    raise DomainError(
                        f"group {self.id!r} has no volumes to test; add one with "
                        f"`tapstream group add-volume {self.id} VM VOLUME PATH`"
                    )
                return [e.FailoverTestStarted(op, cp, dict(exports))]
            case c.StopFailoverTest(operation=op):
                if self.test is None:
                    raise DomainError(f"no failover test of {self.id!r} is running")
                if op and op != self.test["operation"]:
                    raise DomainError(
                        f"the running failover test is {self.test['operation']}, not {op}"
                    )
                return [e.FailoverTestStopped(self.test["operation"])]
            case c.BeginFailover(operation=op, kind=kind):
                return [self._begin(op, kind)]
            case c.CompleteFailover(operation=op, checkpoint_id=cp, exports=exports):
                self._running(op)
                if self.pending_kind == "failback":
                    return [e.FailedBack(op, cp, dict(exports))]
                return [e.FailedOver(op, self.pending_kind or "failover", cp, dict(exports))]
            case c.AbortFailover(operation=op, error=error):
                self._running(op)
                return [e.FailoverAborted(op, error)]
            case c.StartReverse(operation=op, delta_bytes=delta):
                if self.status != FAILED_OVER:
                    raise DomainError(
                        f"group {self.id!r} is {self.status}: reverse protection follows a failover "
                        f"or move (`tapstream failover {self.id}` / `tapstream move {self.id}`)"
                    )
                return [e.ReverseProtectionStarted(op, delta)]
            case c.DeleteGroup():
                if self.status not in FORWARD or self.test is not None:
                    raise DomainError(
                        f"group {self.id!r} is {self.status}"
                        f"{' with a failover test running' if self.test else ''}; "
                        "stop the test / fail back before deleting it"
                    )
                return [e.GroupDeleted()]
        raise DomainError(f"a protection group does not take {type(command).__name__}")

    def _create(self, cmd: c.CreateGroup) -> list[e.Event]:
        if self.version and self.status != DELETED:
            raise DomainError(
                f"protection group {self.id!r} exists; see `tapstream group show {self.id}`"
            )
        if self.version:
            raise DomainError(
                f"protection group {self.id!r} was deleted; its name stays taken (its topics "
                "hold its history): choose another name"
            )
        _name("group", self.id)
        if cmd.mode not in MODES:
            raise DomainError(f"mode {cmd.mode!r}: sync or async")
        for what, value in (
            ("rpo_target_s", cmd.rpo_target_s),
            ("journal_history_s", cmd.journal_history_s),
            ("checkpoint_interval_s", cmd.checkpoint_interval_s),
        ):
            if value <= 0:
                raise DomainError(f"{what} must be > 0 (got {value})")
        return [
            e.GroupCreated(
                self.id,
                cmd.mode,
                cmd.rpo_target_s,
                cmd.journal_history_s,
                cmd.checkpoint_interval_s,
            )
        ]

    @staticmethod
    def _positive(what: str, value: float | None, current: float) -> float:
        if value is None:
            return current
        if value <= 0:
            raise DomainError(f"{what} must be > 0 (got {value})")
        return value

    def _vm(self, vm: str) -> Vm:
        if vm not in self.vms:
            raise DomainError(
                f"group {self.id!r} has no VM {vm!r}; add it with `tapstream group add-vm {self.id} {vm}`"
            )
        return self.vms[vm]

    def _membership_can_change(self) -> None:
        if self.status not in FORWARD:
            raise DomainError(
                f"group {self.id!r} is {self.status}: VMs and volumes change only while it is "
                "protected from its original site (fail back first)"
            )
        if self.test is not None:
            raise DomainError(
                f"a failover test of {self.id!r} is running; stop it first "
                f"(`tapstream failover-test stop {self.id}`)"
            )

    def _begin(self, op: str, kind: str) -> e.Event:
        if self.operation is not None:
            raise DomainError(
                f"operation {self.operation} is running on group {self.id!r}; wait for it "
                f"(`tapstream operation show {self.operation}`)"
            )
        if kind in ("failover", "move"):
            if self.status not in FORWARD:
                raise DomainError(
                    f"group {self.id!r} is {self.status}: it can fail over only while protected "
                    f"from {self.source_site}"
                )
            if self.test is not None:
                raise DomainError(
                    f"a failover test of {self.id!r} is running; stop it first "
                    f"(`tapstream failover-test stop {self.id}`)"
                )
        elif kind == "failback":
            if self.status != REVERSE_PROTECTING:
                hint = (
                    f"start reverse protection first (`tapstream reverse {self.id}`)"
                    if self.status == FAILED_OVER
                    else "fail over or move it first"
                )
                raise DomainError(f"group {self.id!r} is {self.status}: {hint}")
        else:
            raise DomainError(f"unknown failover kind {kind!r}: failover, move or failback")
        if not self.volumes():
            raise DomainError(f"group {self.id!r} has no volumes")
        return e.FailoverStarted(op, kind)

    def _running(self, op: str) -> None:
        if self.operation != op:
            raise DomainError(
                f"operation {op} is not the one running on group {self.id!r} ({self.operation})"
            )

    # --- apply -----------------------------------------------------------------------------------
    def _apply(self, event: e.Event) -> None:
        # An event decided at the other site passed its rules, not necessarily ours (an older or a
        # compromised site): a name that could become a path outside our directories adds
        # nothing here, and a group so named is never live. The version still moves, so both
        # sites agree on what follows.
        match event:
            case e.GroupCreated() if not valid_name(self.id):
                self.status = DELETED
            case e.VmAdded() if not valid_name(event.vm):
                pass
            case e.VolumeAdded() if not (valid_name(event.vm) and valid_name(event.volume)):
                pass
            case e.GroupCreated():
                self.status, self.mode = PROTECTING, event.mode
                self.rpo_target_s, self.journal_history_s = (
                    event.rpo_target_s,
                    event.journal_history_s,
                )
                self.checkpoint_interval_s = event.checkpoint_interval_s
                self.source_site, self.target_site = event.source_site, event.target_site
                self.active_site = event.source_site
            case e.GroupSettingsChanged():
                self.mode, self.rpo_target_s = event.mode, event.rpo_target_s
                self.journal_history_s, self.checkpoint_interval_s = (
                    event.journal_history_s,
                    event.checkpoint_interval_s,
                )
            case e.VmAdded():
                self.vms[event.vm] = Vm(event.vm, event.target_vm)
            case e.VmRemoved():
                self.vms.pop(event.vm, None)
            case e.TargetPaired():
                self.vms[event.vm].target_vm = event.target_vm
            case e.VolumeAdded() if event.vm in self.vms:
                self.vms[event.vm].volumes[event.volume] = Volume(
                    event.volume, event.path, event.size, event.target_path
                )
            case e.VolumeRemoved():
                self.vms[event.vm].volumes.pop(event.volume, None)
            case e.VmDefined() if event.vm in self.vms:
                self.vms[event.vm].spec = VmSpec.stored(event.spec)
            case e.VmUndefined() if event.vm in self.vms:
                self.vms[event.vm].spec = None
            case e.WritesFenced():
                self.fenced[event.site] = event.owner
            case e.WritesUnfenced():
                if not event.owner or self.fenced.get(event.site) == event.owner:
                    self.fenced.pop(event.site, None)
            case e.ProtectionPaused():
                self.status = PAUSED
            case e.ProtectionResumed():
                self.status = PROTECTING
            case e.FailoverTestStarted():
                self.test = {
                    "operation": event.operation,
                    "checkpoint_id": event.checkpoint_id,
                    "exports": dict(event.exports),
                }
            case e.FailoverTestStopped():
                self.test = None
            case e.FailoverStarted():
                self.operation, self.pending_kind = event.operation, event.kind
                self.status = FAILING_BACK if event.kind == "failback" else FAILING_OVER
            case e.FailedOver():
                self.status, self.active_site = FAILED_OVER, self.target_site
                self.operation = self.pending_kind = None
                self.exports = dict(event.exports)
                self.last_failover = {
                    "operation": event.operation,
                    "kind": event.kind,
                    "checkpoint_id": event.checkpoint_id,
                }
            case e.FailoverAborted():
                back = REVERSE_PROTECTING if self.pending_kind == "failback" else PROTECTING
                self.status, self.operation, self.pending_kind = back, None, None
            case e.ReverseProtectionStarted():
                self.status = REVERSE_PROTECTING
            case e.FailedBack():
                self.status, self.active_site = PROTECTING, self.source_site
                self.operation = self.pending_kind = None
                self.exports = dict(event.exports)
            case e.GroupDeleted():
                self.status = DELETED

    def state(self) -> dict[str, Any]:
        return {
            "name": self.id,
            "version": self.version,
            "status": self.status,
            "mode": self.mode,
            "rpo_target_s": self.rpo_target_s,
            "journal_history_s": self.journal_history_s,
            "checkpoint_interval_s": self.checkpoint_interval_s,
            "source_site": self.source_site,
            "target_site": self.target_site,
            "active_site": self.active_site,
            "vms": [
                {
                    "name": vm.name,
                    "target_vm": vm.target_vm,
                    "volumes": [
                        {
                            "name": v.name,
                            "path": v.path,
                            "size": v.size,
                            "target_path": v.target_path,
                        }
                        for v in vm.volumes.values()
                    ],
                    "spec": vm.spec.to_dict() if vm.spec else None,
                }
                for vm in self.vms.values()
            ],
            "failover_test": self.test,
            "operation": self.operation,
            "last_failover": self.last_failover,
            "exports": dict(self.exports),
            "fenced": dict(self.fenced),
        }


# --- operation -----------------------------------------------------------------------------------
class OperationStatus(StrEnum):
    """An operation's state, in the projection and the API (`tapstream operation show`)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


RUNNING = OperationStatus.RUNNING
SUCCEEDED = OperationStatus.SUCCEEDED
FAILED = OperationStatus.FAILED
KINDS = ("failover-test", "failover", "move", "reverse", "failback", "checkpoint")


class Operation(Aggregate):
    type_name = "operation"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.kind = ""
        self.group = ""
        self.params: dict[str, str] = {}
        self.status: OperationStatus | Literal[""] = ""  # "": not started yet
        self.steps: list[dict[str, Any]] = []
        self.result: dict[str, str] = {}
        self.error = ""

    def decide(self, command: c.Command) -> list[e.Event]:
        match command:
            case c.StartOperation(kind=kind, group=group, params=params):
                if self.version:
                    raise DomainError(f"operation {self.id} exists")
                if kind not in KINDS:
                    raise DomainError(f"unknown operation kind {kind!r}: {', '.join(KINDS)}")
                return [e.OperationStarted(kind, group, dict(params))]
        if self.version == 0:
            raise NotFound(f"no operation {self.id}; list them with `tapstream operation list`")
        if self.status != RUNNING:
            raise DomainError(f"operation {self.id} already {self.status}")
        match command:
            case c.ReportProgress(step=step, done=done, total=total, message=message):
                return [e.OperationProgressed(step, done, total, message)]
            case c.SucceedOperation(result=result):
                return [e.OperationSucceeded(dict(result))]
            case c.FailOperation(error=error):
                return [e.OperationFailed(error)]
        raise DomainError(f"an operation does not take {type(command).__name__}")

    def _apply(self, event: e.Event) -> None:
        match event:
            case e.OperationStarted():
                self.kind, self.group, self.params, self.status = (
                    event.kind,
                    event.group,
                    dict(event.params),
                    RUNNING,
                )
            case e.OperationProgressed():
                self.steps = [
                    *self.steps,
                    {
                        "step": event.step,
                        "done": event.done,
                        "total": event.total,
                        "message": event.message,
                    },
                ]
            case e.OperationSucceeded():
                self.status, self.result = SUCCEEDED, dict(event.result)
            case e.OperationFailed():
                self.status, self.error = FAILED, event.error

    def state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "group": self.group,
            "params": dict(self.params),
            "status": self.status,
            "steps": list(self.steps),
            "result": dict(self.result),
            "error": self.error,
        }


# --- checkpoint log --------------------------------------------------------------------------------
class CheckpointLog(Aggregate):
    """The checkpoints one site manager took of one group (id `GROUP@SITE`). A fact about the write
    stream, not a decision on the group: kept apart so that each log has a single writer, and a
    checkpoint taken at one site never races the other site's change of the group (a failover test
    started at the recovery site while the protected site checkpoints) for the same version."""

    type_name = "checkpoints"
    KEEP = 100

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.checkpoints: list[dict[str, str]] = []  # newest last

    @staticmethod
    def id_of(group: str, site: str) -> str:
        return f"{group}@{site}"

    @classmethod
    def ids_of(cls, group: str) -> list[str]:
        """Both sites' logs of `group`."""
        return [cls.id_of(group, site) for site in ("protected", "recovery")]

    def decide(self, command: c.Command) -> list[e.Event]:
        match command:
            case c.RecordCheckpoint(checkpoint_id=cp, tag=tag, site=site):
                return [e.CheckpointTaken(cp, tag, site)]
        raise DomainError(f"a checkpoint log does not take {type(command).__name__}")

    def _apply(self, event: e.Event) -> None:
        match event:
            case e.CheckpointTaken():
                self.checkpoints = [
                    *self.checkpoints,
                    {"id": event.checkpoint_id, "tag": event.tag, "site": event.site},
                ][-self.KEEP :]

    def state(self) -> dict[str, Any]:
        group, _, site = self.id.rpartition("@")
        return {
            "name": self.id,
            "group": group,
            "recorded_by": site,
            "version": self.version,
            "checkpoints": list(self.checkpoints),
        }


# --- VM log --------------------------------------------------------------------------------------
class VmLog(Aggregate):
    """The VMs one site's driver runs for one group (id `GROUP@SITE`), as it last reported them:
    a fact of that site, so each log has a single writer (as CheckpointLog). The other site reads it
    (mirrored): failback waits here for the recovery site's VMs to be down before the data moves."""

    type_name = "vms"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.vms: dict[str, dict[str, str]] = {}  # domain -> {vm, purpose, state}

    @staticmethod
    def id_of(group: str, site: str) -> str:
        return f"{group}@{site}"

    def running(self, purpose: str | None = None) -> list[str]:
        """Domains reported in any state but shut off (a crashed or paused VM still holds disks)."""
        return sorted(
            d
            for d, v in self.vms.items()
            if v.get("state") != "shutoff" and (purpose is None or v.get("purpose") == purpose)
        )

    def decide(self, command: c.Command) -> list[e.Event]:
        match command:
            case c.ReportVms(site=site, vms=vms, operation=op):
                changed = {d: v for d, v in vms.items() if self.vms.get(d) != v}
                changed = {
                    d: v for d, v in changed.items() if d in self.vms or v["state"] != "gone"
                }
                return [e.VmsReported(site, changed, op)] if changed else []
        raise DomainError(f"a VM log does not take {type(command).__name__}")

    def _apply(self, event: e.Event) -> None:
        match event:
            case e.VmsReported():
                vms = {**self.vms, **{d: dict(v) for d, v in event.vms.items()}}
                self.vms = {d: v for d, v in vms.items() if v.get("state") != "gone"}

    def state(self) -> dict[str, Any]:
        group, _, site = self.id.rpartition("@")
        return {
            "name": self.id,
            "group": group,
            "site": site,
            "version": self.version,
            "vms": {d: dict(v) for d, v in sorted(self.vms.items())},
        }


AGGREGATES: dict[str, type[Aggregate]] = {
    a.type_name: a for a in (Site, ProtectionGroup, Operation, CheckpointLog, VmLog)
}

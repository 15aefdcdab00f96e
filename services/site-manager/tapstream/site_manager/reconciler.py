"""The reconciler: run exactly the services this site owes each group in its current state (the
tapper, the checkpoint VDSA, the journal and the applying VDSA, the reverse applier). A group is
reconciled after each of its changes, and again until it converges; a group an operation of ours
is changing (`busy`) waits until the operation ends."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tapstream.core.logging import get_logger
from tapstream.site_manager.delta import GRANULE
from tapstream.site_manager.domain import ProtectionGroup
from tapstream.site_manager.domain.services import (
    APPLY,
    CHECKPOINTS,
    JOURNAL,
    REVERSE,
    TAPPER,
    desired_roles,
)
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.layout import Layout, TapperSpec
from tapstream.site_manager.reverse import ReverseApplier
from tapstream.site_manager.supervisor import Supervisor

log = get_logger("tapstream.site_manager.reconciler")


class Reconciler:
    def __init__(self, layout: Layout, supervisor: Supervisor) -> None:
        self.layout = layout
        self.s = layout.s
        self.site = layout.site
        self.supervisor = supervisor
        self.reverse: dict[str, ReverseApplier] = {}
        self.busy: set[str] = set()  # groups whose services an operation of ours is changing
        self._dirty: set[str] = set()
        self._pending: set[str] = set()  # being reconciled now
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, groups: set[str]) -> None:
        self._dirty = set(groups)
        self._task = asyncio.create_task(self._loop())
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for applier in self.reverse.values():
            await applier.stop()

    def changed(self, group: str) -> None:
        self._dirty.add(group)
        self._wake.set()

    def converged(self, group: str) -> bool:
        return group not in self._dirty and group not in self.busy and group not in self._pending

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            self._pending = set(dirty)
            for name in sorted(dirty):
                if name in self.busy:
                    self._dirty.add(name)
                    continue
                try:
                    await self.reconcile(self.layout.group(name))
                except OperationFailed as exc:
                    # Needs the operator (a missing volume): retried at the group's next change.
                    log.error("group's services not started", group=name, error=str(exc))
                except Exception as exc:
                    log.error(
                        "could not bring the group's services to its state; retrying",
                        group=name,
                        error=repr(exc),
                    )
                    self._dirty.add(name)
                finally:
                    self._pending.discard(name)
            if self._dirty:
                await asyncio.sleep(1)
                self._wake.set()

    async def reconcile(self, g: ProtectionGroup) -> None:
        """Run exactly the services this site owes `g` in its current state."""
        if not self.s.site_manager_run_services or g.version == 0:
            return
        if not self.layout.acts_for(g.id):
            return
        roles = desired_roles(g, self.site)
        if roles is None:
            return  # the operation's site changes the services step by step
        wanted: set[str] = set()
        if TAPPER in roles:
            wanted.add(f"tapper-{g.id}")
            await self.ensure_tapper(self.layout.tapper_spec(g, g.status))
        if CHECKPOINTS in roles:
            wanted.add(f"vdsa-protected-{g.id}")
            # The VDSA's checkpoint role is called "protected"; after a failover it runs at the
            # recovery site, so that role is pointed at this site's cluster.
            await self.supervisor.python(
                f"vdsa-protected-{g.id}",
                "tapstream.vdsa",
                {
                    "TAPSTREAM_SITE": "protected",
                    "TAPSTREAM_PROTECTED_BOOTSTRAP": self.s.bootstrap,
                    "TAPSTREAM_VDSA_GROUPS": json.dumps([g.id]),
                    "TAPSTREAM_VDSA_CHECKPOINT_INTERVAL_S": str(g.checkpoint_interval_s),
                },
            )
        if JOURNAL in roles or APPLY in roles:
            wanted |= {f"journal-{g.id}", f"vdsa-recovery-{g.id}"}
            await self.ensure_recovery_services(g)
        if REVERSE in roles and g.id not in self.reverse:
            await self.start_reverse(g)
        if REVERSE not in roles and g.id in self.reverse:
            await self.reverse.pop(g.id).stop()
        for name in list(self.supervisor.children):
            role_group = (
                name.split("-", 1)[1]
                if name.startswith(("tapper-", "journal-"))
                else name.removeprefix("vdsa-protected-").removeprefix("vdsa-recovery-")
            )
            if role_group == g.id and name not in wanted and not name.startswith("test-"):
                await self.supervisor.stop(name)

    async def ensure_tapper(self, spec: TapperSpec) -> None:
        missing = [str(p) for p in spec.volumes.values() if not p.exists()]
        if missing:
            raise OperationFailed(
                f"volumes of {spec.group} not found at this site: {', '.join(missing)}"
            )
        await self.supervisor.python(
            f"tapper-{spec.group}",
            "tapstream.tapper",
            {
                "TAPSTREAM_SITE": self.site,
                "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                    [
                        {
                            "name": n,
                            "path": str(p),
                            "group": spec.group,
                            "mode": spec.mode,
                            "initial_sync": spec.initial_sync,
                        }
                        for n, p in sorted(spec.volumes.items())
                    ]
                ),
                "TAPSTREAM_TAPPER_LISTEN_HOST": spec.host,
                "TAPSTREAM_TAPPER_LISTEN_PORT": str(spec.port),
                "TAPSTREAM_TAPPER_STATE_DIR": str(spec.state_dir),
                # The tapper checks the paths again: it serves nothing outside this site's roots.
                "TAPSTREAM_TAPPER_VOLUME_ROOTS": json.dumps([str(r) for r in spec.roots]),
                "TAPSTREAM_TAPPER_HOST_ID": f"{self.site}-tapper",
            },
            ready_port=spec.port,
        )

    async def ensure_recovery_services(self, g: ProtectionGroup) -> None:
        groups = json.dumps([g.id])
        history = self.s.site_manager_apply_delay_s or g.journal_history_s
        replica_dir = str(self.s.replica_dir.resolve())
        await self.supervisor.python(
            f"journal-{g.id}",
            "tapstream.journal",
            {
                "TAPSTREAM_SITE": self.site,
                "TAPSTREAM_JOURNAL_GROUPS": groups,
                "TAPSTREAM_REPLICA_DIR": replica_dir,
            },
        )
        await self.supervisor.python(
            f"vdsa-recovery-{g.id}",
            "tapstream.vdsa",
            {
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_VDSA_GROUPS": groups,
                "TAPSTREAM_REPLICA_DIR": replica_dir,
                "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": str(history),
                "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
            },
        )

    async def start_reverse(self, g: ProtectionGroup) -> ReverseApplier:
        applier = ReverseApplier(
            self.s,
            g.id,
            {v.name: self.layout.volume_path(v) for v in g.volumes().values()},
            self.layout.dir / "reverse" / f"{g.id}.json",
            self.layout.tapper_state(g),
            GRANULE,
        )
        await applier.start()
        self.reverse[g.id] = applier
        return applier

    async def stop_reverse(self, group: str) -> None:
        applier = self.reverse.pop(group, None)
        if applier is not None:
            await applier.stop()

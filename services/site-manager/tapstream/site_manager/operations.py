"""What a site manager does at its site, wired from its parts: the reconciler keeps the right
services running for each group (`reconciler`), commands and checkpoints go through `control`, the
journal is read through one `journal_reader`, and the recovery operations run in the `runner`, one
module per workflow (`workflows/`). This is the face the REST API and the service see."""

from __future__ import annotations

import contextlib
from typing import Any

from tapstream.core.logging import get_logger
from tapstream.core.replica import Replica
from tapstream.core.settings import load
from tapstream.site_manager.application import Execute
from tapstream.site_manager.control import Control
from tapstream.site_manager.domain import Ledger
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.journal_reader import JournalReader
from tapstream.site_manager.layout import Layout
from tapstream.site_manager.reconciler import Reconciler
from tapstream.site_manager.runner import Runner
from tapstream.site_manager.settings import SiteManagerSettings
from tapstream.site_manager.supervisor import Supervisor
from tapstream.site_manager.vms import VmSettings, make_driver, vm_status
from tapstream.site_manager.vms.keeper import VmKeeper
from tapstream.site_manager.workflows.context import Context, Trail

log = get_logger("tapstream.site_manager.operations")


class Operations:
    def __init__(self, settings: SiteManagerSettings, ledger: Ledger, execute: Execute) -> None:
        self.s = settings
        self.site = settings.site
        self.layout = Layout(settings, ledger)
        self.supervisor = Supervisor(
            self.layout.dir / "services", settings.site_manager_stop_timeout_s
        )
        self.journal = JournalReader(settings.database_url)
        self.ctl = Control(self.layout, execute)
        self.reconciler = Reconciler(self.layout, self.supervisor)
        self.runner = Runner(
            Context(
                layout=self.layout,
                execute=execute,
                progress=Trail(execute),
                control=self.ctl,
                journal=self.journal,
                reconciler=self.reconciler,
                supervisor=self.supervisor,
                vms=make_driver(load(VmSettings)),
            )
        )
        self.vm_keeper = VmKeeper(self.runner.ctx)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.layout.dir.mkdir(parents=True, exist_ok=True)
        self.supervisor.adopt()
        await self.runner.fail_interrupted()
        self.reconciler.start({g.id for g in self.layout.ledger.all("group")})
        for g in self.layout.ledger.all("group"):  # a failback that began while we were down
            self.vm_keeper.changed(g.id)

    async def stop(self) -> None:
        await self.runner.stop()
        await self.vm_keeper.stop()
        await self.reconciler.stop()
        if self.s.site_manager_stop_services:
            await self.supervisor.stop_all()
        else:
            log.info(
                "leaving this site's services running for the next site manager",
                children=sorted(self.supervisor.children),
            )
        await self.ctl.stop()
        with contextlib.suppress(Exception):
            await self.journal.stop()

    def changed(self, aggregate_type: str, aggregate_id: str) -> None:
        if aggregate_type == "group":
            self.reconciler.changed(aggregate_id)
            self.vm_keeper.changed(aggregate_id)

    # --- what the API asks -----------------------------------------------------------------------
    async def control(
        self, group: str, kind: str, args: dict[str, str] | None = None, site: str | None = None
    ) -> None:
        await self.ctl.control(group, kind, args, site)

    async def checkpoint(self, group: str, tag: str | None) -> str:
        return await self.ctl.checkpoint(group, tag)

    async def checkpoints(self, group: str) -> list[dict[str, Any]]:
        """The journal's checkpoints (recovery site); elsewhere the ones taken through a site manager."""
        if self.site != self.layout.group(group).target_site:
            return self.ctl.recorded_checkpoints(group)
        return await self.journal.checkpoints(group)

    async def begin(self, kind: str, state: dict[str, Any], checkpoint: str) -> dict[str, Any]:
        return await self.runner.begin(kind, state, checkpoint)

    async def stop_test(self, state: dict[str, Any]) -> dict[str, Any]:
        return await self.runner.stop_test(state)

    async def status(self, state: dict[str, Any]) -> dict[str, Any]:
        name = state["name"]
        g = self.layout.group(name)
        mine = [n for n in self.supervisor.children if n.endswith(f"-{name}") or f"-{name}-" in n]
        out: dict[str, Any] = {
            "group": state,
            "site": self.site,
            "converged": self.reconciler.converged(name),
            "services": {n: self.supervisor.running(n) for n in mine},
            "pids": {n: self.supervisor.pid(n) for n in mine},
        }
        out["vms"] = await vm_status(self.runner.ctx, name)
        if name in self.reconciler.reverse:
            out["reverse"] = self.reconciler.reverse[name].status()
        if self.site == g.target_site:
            out["replicas"] = {
                v: Replica(self.s.replica_dir, name, v).position().seq for v in g.volumes()
            }
        if self.site == g.active_site and g.status in (
            a.PROTECTING,
            a.PAUSED,
            a.FAILED_OVER,
            a.REVERSE_PROTECTING,
        ):
            out["exports"] = self.layout.exports(g)
        return out

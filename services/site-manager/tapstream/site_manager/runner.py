"""The workflow runner: starts a recovery operation (its `Operation` aggregate, whose progress events
are its trail), runs the workflow of its kind as a task, records how it ended, and gives the group
back when it fails. Operations a stopped site manager left running are failed at the next start.

Which site runs what: failover test, failover and move run at the group's recovery site (it holds
the journal and the replicas, and serves the result); reverse and failback run at the original site
(it receives the recovery site's writes and serves the volumes again).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tapstream.core.logging import get_logger
from tapstream.site_manager import metrics
from tapstream.site_manager.domain import DomainError, ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.workflows import failback, failover, failover_test
from tapstream.site_manager.workflows.context import Context

log = get_logger("tapstream.site_manager.operations")

Workflow = Callable[[Context, str, str, str], Awaitable[dict[str, str]]]
WORKFLOWS: dict[str, Workflow] = {
    "failover-test": failover_test.start,
    "failover-test-stop": failover_test.stop,
    "failover": failover.failover,
    "move": failover.move,
    "reverse": failback.reverse,
    "failback": failback.failback,
}
RECOVERY_KINDS = ("failover-test", "failover", "move")


class Runner:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.layout = ctx.layout
        self.site = ctx.layout.site
        self._running: dict[str, asyncio.Task[None]] = {}

    async def stop(self) -> None:
        for t in list(self._running.values()):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def runs_at(self, kind: str, g: ProtectionGroup) -> str:
        return g.target_site if kind in RECOVERY_KINDS else g.source_site

    async def begin(self, kind: str, state: dict[str, Any], checkpoint: str) -> dict[str, Any]:
        g = self.layout.group(state["name"])
        runs_at = self.runs_at(kind, g)
        if self.site != runs_at:
            raise DomainError(
                f"{kind} of {g.id!r} runs at the {runs_at} site; ask its site manager "
                f"(`tapstream --site {runs_at} ...`)"
            )
        op = str(uuid.uuid4())
        # The group's rules first: a refused operation leaves no trace.
        if kind == "failover-test":
            g.decide(c.StartFailoverTest(op, checkpoint))
        elif kind == "reverse":
            g.decide(c.StartReverse(op))
        else:
            g.decide(c.BeginFailover(op, "failback" if kind == "failback" else kind))
        await self.ctx.execute(
            "operation", op, c.StartOperation(kind, g.id, {"checkpoint": checkpoint})
        )
        self._running[op] = asyncio.create_task(self._run(op, kind, g.id, checkpoint))
        return self.layout.ledger.get("operation", op).state()

    async def stop_test(self, state: dict[str, Any]) -> dict[str, Any]:
        g = self.layout.group(state["name"])
        if self.site != g.target_site:
            raise DomainError(
                f"the failover test of {g.id!r} runs at the {g.target_site} site; ask its site manager"
            )
        g.decide(c.StopFailoverTest())
        op = str(uuid.uuid4())
        await self.ctx.execute(
            "operation", op, c.StartOperation("failover-test", g.id, {"action": "stop"})
        )
        self._running[op] = asyncio.create_task(self._run(op, "failover-test-stop", g.id, ""))
        return self.layout.ledger.get("operation", op).state()

    async def _run(self, op: str, kind: str, group: str, checkpoint: str) -> None:
        reconciler = self.ctx.reconciler
        reconciler.busy.add(group)
        try:
            result = await WORKFLOWS[kind](self.ctx, op, group, checkpoint)
            await self.ctx.execute("operation", op, c.SucceedOperation(result))
            metrics.OPERATIONS.labels(kind, "succeeded").inc()
        except Exception as exc:
            log.error("operation failed", operation=op, kind=kind, group=group, error=repr(exc))
            metrics.OPERATIONS.labels(kind, "failed").inc()
            await self._abort(op, kind, self.layout.group(group), str(exc))
            with contextlib.suppress(Exception):
                await self.ctx.execute("operation", op, c.FailOperation(str(exc) or repr(exc)))
        finally:
            reconciler.busy.discard(group)
            self._running.pop(op, None)
            reconciler.changed(group)

    async def fail_interrupted(self) -> None:
        """Operations this site was running when its manager stopped: fail them, release the group."""
        for agg in self.layout.ledger.all("operation"):
            op = agg.state()
            if op["status"] != a.RUNNING or op["id"] in self._running:
                continue
            if not self.layout.acts_for(op["group"]):
                continue  # another site manager's group (it fails its own)
            g = self.layout.group(op["group"])
            if self.runs_at(op["kind"], g) != self.site:
                continue
            error = (
                "the site manager stopped while this operation ran; check the group and retry it"
            )
            log.warning(
                "failing an interrupted operation", operation=op["id"], kind=op["kind"], group=g.id
            )
            await self._abort(op["id"], op["kind"], g, error)
            await self.ctx.execute("operation", op["id"], c.FailOperation(error))

    async def _abort(self, op: str, kind: str, g: ProtectionGroup, error: str) -> None:
        """Give the group back: end its failover state, let the side whose writes we stopped write again."""
        if g.operation != op:
            return
        with contextlib.suppress(Exception):
            await self.ctx.execute("group", g.id, c.AbortFailover(op, error))
        if kind in ("move", "failback"):
            fenced = g.source_site if kind == "move" else g.target_site
            with contextlib.suppress(Exception):
                await self.ctx.control.control(
                    g.id, "RESUME", {"writes": "allow", "owner": op}, site=fenced
                )

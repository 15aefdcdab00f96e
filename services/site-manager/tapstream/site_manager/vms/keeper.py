"""The recovery site's reaction to a failback decided at the original site: its VMs of the group
shut down cleanly (and are recorded so in its VM log) before the original site fences the writes
here and moves the data back (`lifecycle.wait_vms_down` waits for exactly that)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from tapstream.core.logging import get_logger
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.vms.lifecycle import stop_vms, vm_log

if TYPE_CHECKING:
    from tapstream.site_manager.workflows.context import Context

log = get_logger("tapstream.site_manager.vms")


class VmKeeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def changed(self, group: str) -> None:
        """A group changed (here or at the other site): shut its VMs here down if a failback began."""
        layout = self.ctx.layout
        if self.ctx.vms.name == "none" or group in self._tasks or not layout.acts_for(group):
            return
        g = layout.group(group)
        if g.status != a.FAILING_BACK or layout.site != g.target_site:
            return
        if not vm_log(self.ctx, group, layout.site).vms:
            return
        self._tasks[group] = asyncio.create_task(self._shut_down(group, g.operation or ""))

    async def _shut_down(self, group: str, op: str) -> None:
        try:
            # The failback is the original site's operation: its trail is written there, not here.
            done = await stop_vms(self.ctx, op, group, graceful=True, trail=False)
            log.info("VMs shut down for the failback", group=group, vms=done)
        except Exception as exc:
            log.error("could not shut the VMs down for the failback", group=group, error=repr(exc))
        finally:
            self._tasks.pop(group, None)

    async def stop(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

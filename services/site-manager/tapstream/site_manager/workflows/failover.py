"""Failover and move (at the recovery site): promote the replicas at a checkpoint and serve them.

A failover is unplanned: the protected site is fenced if its Kafka answers, and the checkpoint is
one the journal already has. A move is planned: the protected site's writes stop first, a final
checkpoint is taken there and waited for in the journal, then the failover proper runs on it.
"""

from __future__ import annotations

import asyncio
import time

from tapstream.core.logging import get_logger
from tapstream.core.replica import Replica
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.vms import start_vms
from tapstream.site_manager.workflows.context import Context

log = get_logger("tapstream.site_manager.workflows.failover")


async def failover(ctx: Context, op: str, group: str, ref: str) -> dict[str, str]:
    await ctx.execute("group", group, c.BeginFailover(op, "failover"))
    await _fence_source(ctx, op, group)
    return await _promote(ctx, op, group, ref)


async def move(ctx: Context, op: str, group: str, _: str) -> dict[str, str]:
    await ctx.execute("group", group, c.BeginFailover(op, "move"))
    g = ctx.layout.group(group)
    await ctx.control.control(group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.source_site)
    await ctx.progress(op, "writes stopped at the protected site")
    cp = await ctx.control.final_checkpoint(group, f"move-{op[:8]}", g.source_site)
    await ctx.progress(op, "final checkpoint", message=cp)
    await _wait_indexed(ctx, op, group, cp)
    await ctx.progress(op, "final checkpoint indexed at the recovery site", message=cp)
    return await _promote(ctx, op, group, cp)


async def _fence_source(ctx: Context, op: str, group: str) -> None:
    """Unplanned failover: fence the protected site's tappers (persisted there, so a tapper that
    comes back later still refuses writes: no split brain) if its Kafka answers now."""
    g = ctx.layout.group(group)
    try:
        await asyncio.wait_for(
            ctx.control.control(
                group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.source_site
            ),
            15,
        )
        await ctx.progress(op, "writes fenced at the protected site")
    except Exception as exc:
        log.warning(
            "could not fence the protected site: its tappers may take writes when they come "
            "back; stop them before they do",
            group=group,
            error=repr(exc),
        )
        await ctx.progress(op, "protected site unreachable: not fenced", message=repr(exc))


async def _wait_indexed(ctx: Context, op: str, group: str, cp: str, within_s: float = 120) -> None:
    """Until the journal holds checkpoint `cp` of every volume and every event before it (what a
    restore at `cp` needs)."""
    s = ctx.layout.s
    vols = sorted(ctx.layout.group(group).volumes())
    deadline = time.monotonic() + within_s
    while True:
        have, complete = await ctx.journal.indexed(
            group, vols, cp, lambda v: Replica(s.replica_dir, group, v).position().seq
        )
        if complete:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"checkpoint {cp} reached the journal for {have} of {vols} within "
                f"{within_s:.0f}s: is MirrorMaker 2 running (`make status`)?"
            )
        await ctx.progress(op, "waiting for the journal", len(have), len(vols), cp)
        await asyncio.sleep(0.5)


async def _promote(ctx: Context, op: str, group: str, ref: str) -> dict[str, str]:
    """Restore the replicas at the checkpoint onto the promoted volumes and serve them."""
    layout = ctx.layout
    cp = await ctx.journal.resolve(group, list(layout.group(group).volumes()), ref)
    await ctx.progress(op, "checkpoint chosen", message=cp)
    # The replica must not move while it is promoted: stop applying first.
    await ctx.supervisor.stop(f"vdsa-recovery-{group}")
    await ctx.supervisor.stop(f"journal-{group}")
    await ctx.restore_all(op, group, cp, None)
    g = layout.group(group)
    await ctx.progress(op, "starting the recovery tapper")
    # A failback fenced this site's tapper; the promoted volume takes writes again.
    await ctx.control.control(group, "RESUME", {"writes": "allow"}, site=layout.site)
    # The tapper serves as the failed-over group will be (the group records it just after).
    await ctx.reconciler.ensure_tapper(layout.tapper_spec(g, a.FAILED_OVER))
    exports = layout.exports(g)
    await ctx.execute("group", group, c.CompleteFailover(op, cp, exports))
    # The data is failed over whatever the VMs do: a VM that does not boot is named in the result.
    vms = await start_vms(ctx, op, group, exports)
    return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}, **vms}

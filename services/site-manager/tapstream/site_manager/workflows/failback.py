"""Reverse and failback (at the original site).

Reverse: this site's tapper stops, what it wrote after the promoted checkpoint is computed (the
`delta`) and asked of the recovery site again (RESYNC), and the reverse applier writes the recovery
site's stream onto the original volumes. Failback: the recovery site's writes stop, its final
checkpoint is waited for in the applier, and this site's tapper serves the volumes again.
"""

from __future__ import annotations

import asyncio
import json
import time

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.site_manager import delta
from tapstream.site_manager.domain import ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.layout import Layout
from tapstream.site_manager.vms import stop_vms, wait_vms_down
from tapstream.site_manager.workflows.context import Context


async def reverse(ctx: Context, op: str, group: str, _: str) -> dict[str, str]:
    g = ctx.layout.group(group)
    cp = (g.last_failover or {}).get("checkpoint_id", "")
    # The original volumes are about to be rewritten: VMs still on them here go down cleanly first.
    stopped = await stop_vms(ctx, op, group, graceful=True)
    await ctx.supervisor.stop(f"tapper-{group}")
    await ctx.supervisor.stop(f"vdsa-protected-{group}")
    # What this site wrote after the promoted checkpoint (an unplanned failover leaves some; a
    # move none) must be undone: the recovery site sends those regions again from its volumes.
    changed = await asyncio.to_thread(written_after, ctx.layout, g, cp)
    delta_bytes = sum(b - a for ranges in changed.values() for a, b in ranges)
    await ctx.progress(
        op,
        "regions written here after the checkpoint",
        delta_bytes,
        message=json.dumps({v: len(r) for v, r in changed.items()}),
    )
    applier = await ctx.reconciler.start_reverse(g)
    await ctx.progress(
        op, "applying the recovery site's writes to the original volumes", message=applier.topic
    )
    if delta_bytes:
        await ctx.control.control(group, "RESYNC", delta.resync_args(changed), site=g.target_site)
    await ctx.execute("group", group, c.StartReverse(op, delta_bytes))
    return {"topic": applier.topic, "delta_bytes": str(delta_bytes), **stopped}


def written_after(layout: Layout, g: ProtectionGroup, cp: str) -> dict[str, list[tuple[int, int]]]:
    """Per volume, the byte ranges this site's stream changed after checkpoint `cp`'s marker, plus
    what its tapper's dirty bitmap holds (written here, never published), in granules."""
    from tapstream.core.replay import read_stream
    from tapstream.tapper.dirty_bitmap import DirtyBitmap

    settings = layout.settings_for(g.source_site)
    records = (
        rec
        for _p, _o, rec in read_stream(
            client_config(settings), settings.topic(f"writes.{g.id}"), make_codec(settings)
        )
    )
    granules, missing = delta.written_after(records, cp, g.volumes())
    if missing:
        raise OperationFailed(
            f"checkpoint {cp} is not in this site's stream for {missing}: cannot tell what "
            "changed here after it; copy the volumes back with `tapstream restore` instead"
        )
    for vol, v in g.volumes().items():
        path = layout.tapper_state(g) / f"{vol}.dirty"
        if path.exists():
            size = layout.volume_path(v).stat().st_size
            bitmap = DirtyBitmap(path, size, delta.GRANULE)
            for start, end in bitmap.dirty_ranges():
                delta.mark(granules[vol], start, end)
            bitmap.close()
    return {
        vol: delta.to_ranges(gs, layout.volume_path(g.volumes()[vol]).stat().st_size)
        for vol, gs in granules.items()
    }


async def failback(ctx: Context, op: str, group: str, _: str) -> dict[str, str]:
    await ctx.execute("group", group, c.BeginFailover(op, "failback"))
    layout = ctx.layout
    g = layout.group(group)
    # The recovery site's manager shuts its VMs of the group down when it sees the failback begin
    # (vms.keeper); fencing the writes under a running guest would fail its I/O instead.
    await wait_vms_down(
        ctx, op, group, g.target_site, ctx.vms.settings.site_manager_vm_shutdown_timeout_s + 60
    )
    await ctx.control.control(group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.target_site)
    await ctx.progress(op, "writes stopped at the recovery site")
    cp = await ctx.control.final_checkpoint(group, f"failback-{op[:8]}", g.target_site)
    await ctx.progress(op, "final checkpoint at the recovery site", message=cp)
    appliers = ctx.reconciler.reverse
    applier = appliers.get(group) or await ctx.reconciler.start_reverse(g)
    deadline = time.monotonic() + 120
    while not applier.seen(cp):
        if applier.error is not None:
            raise OperationFailed(f"reverse replication failed: {applier.error!r}")
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the final checkpoint {cp} did not arrive here within 120s: is MirrorMaker 2 "
                "mirroring recovery -> protected (`make status`)?"
            )
        await asyncio.sleep(0.2)
    await ctx.progress(
        op,
        "final checkpoint applied to the original volumes",
        message=json.dumps(applier.status()),
    )
    await applier.stop()
    appliers.pop(group, None)
    # The move (or failover) fenced the original tapper; it is the writer again.
    await ctx.control.control(group, "RESUME", {"writes": "allow"}, site=g.source_site)
    # The tapper serves as the protected group will be (the group records it just after).
    await ctx.reconciler.ensure_tapper(layout.tapper_spec(g, a.PROTECTING))
    exports = layout.exports(g)
    await ctx.execute("group", group, c.CompleteFailover(op, cp, exports))
    return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}}

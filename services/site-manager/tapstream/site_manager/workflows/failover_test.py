"""Failover test (at the recovery site), instant: each volume at the checkpoint is served at once,
without copying it first.

Per volume, a read-only checkpoint view (tapstream.instant: the journal's events up to the checkpoint
over the replica as it was when the view opened, which the VDSA's preserve session keeps while
replication goes on) is served by nbdkit on localhost; `qemu-nbd` serves a qcow2 overlay backed by
that view to the test VMs. Reads see the checkpoint, writes land in the overlay, the replica is
never written by the test; the group's VMs (if a VM driver is set) boot from the exports as
DOMAIN-test; stopping the test destroys them, ends the views' preserve sessions and deletes the
overlays.

qemu-nbd stays the export every client sees (the reference NBD server, as before); nbdkit carries the
view because its C core does the protocol and threads while Python only plans each read.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from tapstream.instant.view import close_views, nbdkit_argv, open_view
from tapstream.journal.restore import RestoreError
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.vms import start_vms, stop_vms
from tapstream.site_manager.workflows.context import Context

OWNER = "failover-test"  # names the preserve sessions a failover test opens


async def start(ctx: Context, op: str, group: str, ref: str) -> dict[str, str]:
    layout = ctx.layout
    vols = sorted(layout.group(group).volumes())
    cp = await ctx.journal.resolve(group, vols, ref)
    await ctx.progress(op, "checkpoint chosen", message=cp)
    await _clean(ctx, group)  # what a test interrupted by a crash left behind
    work = layout.dir / "failover-test" / group
    host = layout.s.site_manager_nbd_host
    exports: dict[str, str] = {}
    try:
        for i, vol in enumerate(vols):
            try:
                spec = await open_view(layout.s, group, vol, cp, work, OWNER)
            except RestoreError as exc:
                raise OperationFailed(f"checkpoint view of {group}/{vol} at {cp}: {exc}") from None
            view_port = layout.port(f"view-{group}-{vol}")
            await ctx.supervisor.ensure(
                f"test-{group}-{vol}-view",
                nbdkit_argv(spec, "127.0.0.1", view_port),
                {},
                ready_port=view_port,
            )
            overlay = work / f"{vol}.overlay.qcow2"
            await _qemu_img_create(overlay, view_port)
            port = layout.port(f"test-{group}-{vol}")
            await ctx.supervisor.ensure(
                f"test-{group}-{vol}",
                [
                    "qemu-nbd",
                    "-f",
                    "qcow2",
                    "-x",
                    vol,
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "-t",
                    "--shared=8",
                    "--cache=writeback",
                    str(overlay),
                ],
                {},
                ready_port=port,
            )
            exports[vol] = f"nbd://{host}:{port}/{vol}"
            await ctx.progress(op, "served", i + 1, len(vols), vol)
    except BaseException:
        await _clean(ctx, group)
        raise
    await ctx.execute("group", group, c.StartFailoverTest(op, cp, exports))
    # The test's VMs (DOMAIN-test, on the isolated test network) boot from the overlays' exports.
    vms = await start_vms(ctx, op, group, exports, purpose="test")
    return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}, **vms}


async def stop(ctx: Context, op: str, group: str, _: str) -> dict[str, str]:
    vms = await stop_vms(ctx, op, group, purpose="test", graceful=False)  # before their disks go
    await _clean(ctx, group)
    await ctx.progress(op, "exports stopped, overlays deleted, views closed")
    await ctx.execute("group", group, c.StopFailoverTest())
    return vms


async def _clean(ctx: Context, group: str) -> None:
    """Stop the test's servers, end its preserve sessions, delete its overlays and delta files."""
    await ctx.supervisor.stop_all(f"test-{group}-")
    await asyncio.to_thread(close_views, ctx.layout.s, group, OWNER)
    await asyncio.to_thread(
        shutil.rmtree, ctx.layout.dir / "failover-test" / group, ignore_errors=True
    )


async def _qemu_img_create(overlay: Path, view_port: int) -> None:
    # The raw format (-F raw) over an NBD protocol node: the view's export.
    backing = {
        "file": {
            "driver": "nbd",
            "server": {"type": "inet", "host": "127.0.0.1", "port": str(view_port)},
        }
    }
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "json:" + json.dumps(backing),
        "-F",
        "raw",
        str(overlay),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise OperationFailed(f"qemu-img create overlay failed: {out.decode(errors='replace')}")

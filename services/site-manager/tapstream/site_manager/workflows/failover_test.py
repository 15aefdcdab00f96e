"""Failover test (at the recovery site): each volume is materialised at the checkpoint by the
journal's restore (replica copy plus the journal's events up to the checkpoint) into a scratch
image, then served by `qemu-nbd` over a qcow2 overlay backed by it. Reads see the checkpoint, writes
land in the overlay, and stopping the test deletes both.

Chosen over our tapper in a non-publishing mode because qemu-nbd is the reference NBD server every
client is tested against, and over a live journal-over-replica view because the replica keeps
changing while replication continues (the copy is taken under the replica's lock).
"""

from __future__ import annotations

import asyncio
import shutil

from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.workflows.context import Context


async def start(ctx: Context, op: str, group: str, ref: str) -> dict[str, str]:
    layout = ctx.layout
    cp = await ctx.journal.resolve(group, list(layout.group(group).volumes()), ref)
    await ctx.progress(op, "checkpoint chosen", message=cp)
    work = layout.dir / "failover-test" / group
    shutil.rmtree(work, ignore_errors=True)
    images = await ctx.restore_all(op, group, cp, work)
    host = layout.s.site_manager_nbd_host
    exports: dict[str, str] = {}
    for vol, image in images.items():
        overlay = image.with_suffix(".overlay.qcow2")
        proc = await asyncio.create_subprocess_exec(
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(image),
            "-F",
            "raw",
            str(overlay),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise OperationFailed(f"qemu-img create overlay failed: {out.decode(errors='replace')}")
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
    await ctx.execute("group", group, c.StartFailoverTest(op, cp, exports))
    return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}}


async def stop(ctx: Context, op: str, group: str, _: str) -> dict[str, str]:
    await ctx.supervisor.stop_all(f"test-{group}-")
    shutil.rmtree(ctx.layout.dir / "failover-test" / group, ignore_errors=True)
    await ctx.progress(op, "exports stopped, overlays and scratch images deleted")
    await ctx.execute("group", group, c.StopFailoverTest())
    return {}

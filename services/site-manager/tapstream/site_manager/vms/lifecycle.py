"""The workflows' side of the VM driver: bring a group's VMs up in boot order on the exports, shut
them down before data moves, wait for the other site's to be down, and say where each VM is.

Every start and stop is recorded in this site's VM log (`VmLog` GROUP@SITE, mirrored), so both
sites' status shows both sites' VMs, and a failback at the original site can wait until the
recovery site's VMs are down before it fences the writes there."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from tapstream.core.logging import get_logger
from tapstream.site_manager.domain import VmLog
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.vms.driver import ABSENT, VmError
from tapstream.site_manager.vms.plan import PlanError, boot_plan

if TYPE_CHECKING:
    from tapstream.site_manager.workflows.context import Context

log = get_logger("tapstream.site_manager.vms")


def vm_log(ctx: Context, group: str, site: str) -> VmLog:
    agg = ctx.layout.ledger.get("vms", VmLog.id_of(group, site))
    assert isinstance(agg, VmLog)
    return agg


async def _report(ctx: Context, op: str, group: str, vms: dict[str, dict[str, str]]) -> None:
    site = ctx.layout.site
    await ctx.execute("vms", VmLog.id_of(group, site), c.ReportVms(site, vms, op))


async def start_vms(
    ctx: Context, op: str, group: str, exports: dict[str, str], purpose: str = "failover"
) -> dict[str, str]:
    """Start the defined VMs of `group` at this site on `exports` (volume -> NBD URI), in boot
    order, each running before the next boots. purpose "test": a failover test's copies (named
    DOMAIN-test, on the isolated test network or none). Returns {"vm.DOMAIN": state}; a VM that
    fails stops the boot order there (the ones after it may depend on it), and its entry says why.
    With the `none` driver nothing starts: {}."""
    if ctx.vms.name == "none":
        return {}
    g = ctx.layout.group(group)
    s = ctx.vms.settings
    try:
        plan = boot_plan(
            ctx.layout.site,
            g,
            exports,
            purpose,
            ctx.layout.dir / "vms",
            s.site_manager_vm_test_network,
        )
    except PlanError as exc:
        await ctx.progress(op, "VMs not started", message=str(exc))
        return {"vms": f"failed: {exc}"}
    result: dict[str, str] = {}
    for i, vm in enumerate(plan):
        entry = {"vm": vm.vm, "purpose": purpose}
        try:
            state = await ctx.vms.start(vm)
        except VmError as exc:
            log.error("VM did not start", group=group, domain=vm.domain, error=str(exc))
            await _report(ctx, op, group, {vm.domain: {**entry, "state": "failed"}})
            await ctx.progress(op, "VM failed to start", i + 1, len(plan), f"{vm.domain}: {exc}")
            result[f"vm.{vm.domain}"] = f"failed: {exc}"
            for later in plan[i + 1 :]:
                result[f"vm.{later.domain}"] = f"not started: {vm.domain} failed before it"
            return result
        await _report(ctx, op, group, {vm.domain: {**entry, "state": state}})
        await ctx.progress(op, "VM started", i + 1, len(plan), f"{vm.domain} ({vm.vm}) {state}")
        result[f"vm.{vm.domain}"] = state
    return result


async def stop_vms(
    ctx: Context,
    op: str,
    group: str,
    purpose: str | None = None,
    graceful: bool = True,
    trail: bool = True,
) -> dict[str, str]:
    """Stop every VM this site runs for `group` (of one purpose, or all): the ones its log names and
    the ones the driver finds carrying the group's metadata. graceful: a clean shutdown (forced off
    after the shutdown timeout), as before data moves; else destroyed (a failover test's end).
    trail: report each VM on operation `op`'s trail (not when `op` is the other site's).
    Returns {"vm.DOMAIN": how it ended}."""
    if ctx.vms.name == "none":
        return {}
    try:
        owned = await ctx.vms.owned(group, ctx.layout.site)
    except VmError as exc:
        raise OperationFailed(f"the VMs of {group!r} could not be listed: {exc}") from None
    known = {
        d: v
        for d, v in {**vm_log(ctx, group, ctx.layout.site).vms, **owned}.items()
        if purpose is None or v.get("purpose") == purpose
    }
    result: dict[str, str] = {}
    for domain, v in sorted(known.items()):
        try:
            how = await ctx.vms.stop(domain, graceful)
        except VmError as exc:
            raise OperationFailed(f"VM {domain!r} could not be stopped: {exc}") from None
        gone = {"vm": v.get("vm", ""), "purpose": v.get("purpose", ""), "state": "gone"}
        await _report(ctx, op, group, {domain: gone})
        if trail:
            await ctx.progress(op, "VM stopped", message=f"{domain}: {how}")
        result[f"vm.{domain}"] = how
    return result


async def wait_vms_down(ctx: Context, op: str, group: str, site: str, within_s: float) -> None:
    """Until `site`'s VM log (mirrored here) shows none of the group's VMs up: its site manager
    shuts them down when it sees the failback start (`vms.keeper`)."""
    deadline = time.monotonic() + within_s
    first = True
    while up := vm_log(ctx, group, site).running():
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the VMs {up} at the {site} site are still up after {within_s:.0f}s: shut them "
                f"down there (is its site manager running with a VM driver?) and retry"
            )
        if first:
            await ctx.progress(
                op, f"waiting for the VMs at the {site} site to shut down", message=", ".join(up)
            )
            first = False
        await asyncio.sleep(0.5)
    if not first:
        await ctx.progress(op, f"VMs at the {site} site are down")


async def vm_status(ctx: Context, group: str) -> dict[str, Any]:
    """Per site, the group's VMs as that site last reported them; at this site, also their state
    now, straight from the driver."""
    out: dict[str, Any] = {}
    g = ctx.layout.group(group)
    for site in dict.fromkeys((g.source_site, g.target_site)):
        out[site] = {d: dict(v) for d, v in vm_log(ctx, group, site).vms.items()}
    here = out.setdefault(ctx.layout.site, {})
    if ctx.vms.name != "none":
        try:
            live = await ctx.vms.states(sorted(here))
            owned = await ctx.vms.owned(group, ctx.layout.site)
        except VmError as exc:
            live, owned = {d: f"unknown ({exc})" for d in here}, {}
        for d, state in live.items():
            here[d]["live"] = state
        for d, v in owned.items():  # carries the group's metadata, started outside an operation
            here.setdefault(d, {**v, "state": "untracked"})["live"] = v["state"]
    for v in here.values():
        v.setdefault("live", ABSENT if ctx.vms.name != "none" else "unknown")
    return out

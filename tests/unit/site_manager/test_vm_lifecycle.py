"""The workflows' VM steps against a driver that records what it is asked (no hypervisor): boot
order, a failure stopping the order, the VM log, and failback waiting for the other site's VMs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tapstream.site_manager.application import Application
from tapstream.site_manager.domain import Ledger, ProtectionGroup, VmLog
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.vms import VmError, VmSettings, start_vms, stop_vms, wait_vms_down
from tapstream.site_manager.vms.plan import PlannedVm


class Recording:
    name = "recording"

    def __init__(self, fail: str = "") -> None:
        self.settings = VmSettings()
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    async def start(self, vm: PlannedVm) -> str:
        self.calls.append(("start", vm.domain))
        if vm.domain == self.fail:
            raise VmError("no capacity")
        return "running"

    async def stop(self, domain: str, graceful: bool) -> str:
        self.calls.append(("stop", domain))
        return "shutdown" if graceful else "destroyed"

    async def states(self, domains: list[str]) -> dict[str, str]:
        return dict.fromkeys(domains, "running")

    async def owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        return {}


def context(tmp_path: Path, driver: Any, site: str = "recovery") -> Any:
    ledger = Ledger()

    async def sink(_: Any) -> None:
        return None

    app = Application(site, ledger, sink)
    steps: list[str] = []

    async def progress(
        op: str, step: str, done: int = 0, total: int = 0, message: str = ""
    ) -> None:
        steps.append(f"{step}: {message}")

    layout = SimpleNamespace(
        site=site, ledger=ledger, dir=tmp_path, group=lambda n: ledger.get("group", n)
    )
    ctx = SimpleNamespace(
        layout=layout, execute=app.execute, progress=progress, vms=driver, steps=steps
    )

    async def setup() -> None:
        for cmd in (
            c.CreateGroup(),
            *(c.AddVm(vm, f"{vm}-dr") for vm in ("app", "db", "web")),
            *(c.AddVolume(vm, f"{vm}0", f"/v/{vm}.img") for vm in ("app", "db", "web")),
            c.DefineVm("db", {"boot_order": 1}),
            c.DefineVm("app", {"boot_order": 2}),
            c.DefineVm("web", {"boot_order": 2}),
        ):
            await app.execute("group", "g1", cmd)

    asyncio.run(setup())
    assert isinstance(ledger.get("group", "g1"), ProtectionGroup)
    return ctx


EXPORTS = {v: f"nbd://h:1/{v}" for v in ("app0", "db0", "web0")}


def test_vms_start_in_boot_order_and_are_logged(tmp_path: Path) -> None:
    driver = Recording()
    ctx = context(tmp_path, driver)
    result = asyncio.run(start_vms(ctx, "op1", "g1", EXPORTS))
    assert driver.calls == [("start", "db-dr"), ("start", "app-dr"), ("start", "web-dr")]
    assert result == {"vm.db-dr": "running", "vm.app-dr": "running", "vm.web-dr": "running"}
    log = ctx.layout.ledger.get("vms", VmLog.id_of("g1", "recovery"))
    assert log.running() == ["app-dr", "db-dr", "web-dr"]
    stopped = asyncio.run(stop_vms(ctx, "op2", "g1", graceful=True))
    assert stopped == {"vm.app-dr": "shutdown", "vm.db-dr": "shutdown", "vm.web-dr": "shutdown"}
    assert ctx.layout.ledger.get("vms", VmLog.id_of("g1", "recovery")).vms == {}


def test_a_vm_that_fails_stops_the_boot_order_there(tmp_path: Path) -> None:
    driver = Recording(fail="app-dr")
    ctx = context(tmp_path, driver)
    result = asyncio.run(start_vms(ctx, "op1", "g1", EXPORTS))
    assert driver.calls == [("start", "db-dr"), ("start", "app-dr")]
    assert result["vm.app-dr"] == "failed: no capacity"
    assert result["vm.web-dr"].startswith("not started: app-dr failed")
    log = ctx.layout.ledger.get("vms", VmLog.id_of("g1", "recovery"))
    assert log.vms["app-dr"]["state"] == "failed" and "web-dr" not in log.vms


def test_failback_waits_for_the_other_sites_vms(tmp_path: Path) -> None:
    ctx = context(tmp_path, Recording(), site="protected")
    recovery_log = VmLog.id_of("g1", "recovery")
    up = {"dr": {"vm": "web", "purpose": "failover", "state": "running"}}

    async def go() -> None:
        await ctx.execute("vms", recovery_log, c.ReportVms("recovery", up))
        waiting = asyncio.create_task(wait_vms_down(ctx, "op", "g1", "recovery", within_s=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        down = {"dr": {**up["dr"], "state": "gone"}}
        await ctx.execute("vms", recovery_log, c.ReportVms("recovery", down))
        await asyncio.wait_for(waiting, 5)

    asyncio.run(go())
    assert ctx.steps[-1].startswith("VMs at the recovery site are down")

    async def stuck() -> None:
        await ctx.execute("vms", recovery_log, c.ReportVms("recovery", up))
        await wait_vms_down(ctx, "op", "g1", "recovery", within_s=0.3)

    with pytest.raises(OperationFailed, match=r"\['dr'\] at the recovery site are still up"):
        asyncio.run(stuck())

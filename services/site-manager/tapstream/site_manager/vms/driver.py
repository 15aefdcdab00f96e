"""The VM driver interface: what a site manager asks of whatever runs VMs at its site, and the
driver TAPSTREAM_SITE_MANAGER_VM_DRIVER picks (none: today's behaviour, exports only)."""

from __future__ import annotations

from typing import Protocol

from tapstream.site_manager.vms.plan import PlannedVm
from tapstream.site_manager.vms.settings import VmSettings

# What `state` answers besides the hypervisor's own words (running, paused, shutoff, crashed, ...).
ABSENT = "absent"


class VmError(RuntimeError):
    """A VM could not be started or stopped; the message says which and why."""


class VmDriver(Protocol):
    """Starts and stops a group's VMs at this site. Blocking work runs off the event loop."""

    name: str
    settings: VmSettings

    async def start(self, vm: PlannedVm) -> str:
        """Define and start `vm` (replacing a leftover domain of the same name that this driver
        made); returns once it runs (its state), VmError if it does not within the timeout."""
        ...

    async def stop(self, domain: str, graceful: bool) -> str:
        """Shut down (graceful: ACPI, forced off after the timeout) or destroy `domain`, then
        forget it; returns how it ended: shutdown, destroyed or absent."""
        ...

    async def states(self, domains: list[str]) -> dict[str, str]:
        """The state of each domain now (ABSENT when the hypervisor does not know it)."""
        ...

    async def owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        """Domains that carry tapstream's metadata for `group` at `site`: domain -> {vm, purpose,
        state}. Drivers that cannot list answer {}."""
        ...


class NoVms:
    """The `none` driver: VMs are the operator's; a failover ends with the exports."""

    name = "none"

    def __init__(self, settings: VmSettings | None = None) -> None:
        self.settings = settings or VmSettings()

    async def start(self, vm: PlannedVm) -> str:
        return ABSENT

    async def stop(self, domain: str, graceful: bool) -> str:
        return ABSENT

    async def states(self, domains: list[str]) -> dict[str, str]:
        return {}

    async def owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        return {}


def make_driver(settings: VmSettings) -> VmDriver:
    match settings.site_manager_vm_driver:
        case "libvirt":
            from tapstream.site_manager.vms.libvirt_driver import LibvirtDriver

            return LibvirtDriver(settings)
        case "exec":
            from tapstream.site_manager.vms.exec_driver import ExecDriver

            return ExecDriver(settings)
    return NoVms(settings)

"""Which VMs of a group come up, in which order, on which exports: pure, from the group alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapstream.site_manager.domain import ProtectionGroup, VmSpec

PURPOSES = ("failover", "test")


class PlanError(ValueError):
    """A VM's definition does not fit the group now (a disk without an export)."""


@dataclass(frozen=True)
class PlannedVm:
    domain: str  # the VM's name at this site (libvirt domain)
    site: str  # the site it runs at (sites may share a hypervisor: each stops only its own)
    group: str
    vm: str  # the protected VM it recovers
    purpose: str  # failover (also move) | test
    spec: VmSpec
    disks: tuple[tuple[str, str], ...]  # (volume, NBD URI of its export), in disk order
    network: str  # "" for none
    serial_log: Path

    def to_json(self) -> dict[str, Any]:
        """What the exec driver is given on `start`."""
        return {
            "domain": self.domain,
            "site": self.site,
            "group": self.group,
            "vm": self.vm,
            "purpose": self.purpose,
            "spec": self.spec.to_dict(),
            "disks": [{"volume": v, "export": uri} for v, uri in self.disks],
            "network": self.network,
            "serial_log": str(self.serial_log),
        }


def domain_name(target_vm: str, purpose: str) -> str:
    """A failover test's copy gets its own name, so it never meets the real recovered VM."""
    return f"{target_vm}-test" if purpose == "test" else target_vm


def boot_plan(
    site: str,
    g: ProtectionGroup,
    exports: dict[str, str],
    purpose: str,
    log_dir: Path,
    test_network: str = "",
) -> list[PlannedVm]:
    """The defined VMs of `g` in boot order (boot_order, then name), each disk on its export. A VM
    without a definition is not started (the operator starts it, as before)."""
    if purpose not in PURPOSES:
        raise PlanError(f"purpose {purpose!r}: one of {PURPOSES}")
    plan = []
    for vm in g.vms.values():
        if vm.spec is None:
            continue
        vols = vm.spec.disk_volumes(list(vm.volumes))
        missing = [v for v in vols if v not in vm.volumes or v not in exports]
        if missing:
            raise PlanError(f"VM {vm.name!r}: no export for its disks {missing}")
        domain = domain_name(vm.target_vm or vm.name, purpose)
        plan.append(
            PlannedVm(
                domain=domain,
                site=site,
                group=g.id,
                vm=vm.name,
                purpose=purpose,
                spec=vm.spec,
                disks=tuple((v, exports[v]) for v in vols),
                network=test_network if purpose == "test" else vm.spec.network,
                serial_log=log_dir / f"{domain}.serial.log",
            )
        )
    return sorted(plan, key=lambda p: (p.spec.boot_order, p.vm))

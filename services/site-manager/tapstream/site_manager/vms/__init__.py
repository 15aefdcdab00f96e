"""VMs at the recovery site: each protected VM's definition (`domain.VmSpec`) becomes a VM on the
recovery exports when a failover, move or failover test runs, through the driver that
TAPSTREAM_SITE_MANAGER_VM_DRIVER names (none, libvirt, exec).

For a workflow: `start_vms(ctx, op, group, exports, purpose)` brings the group's VMs up in boot
order, `stop_vms(ctx, op, group, purpose, graceful)` takes them down, `vm_status(ctx, group)` says
where each one is."""

from tapstream.site_manager.vms.driver import ABSENT, NoVms, VmDriver, VmError, make_driver
from tapstream.site_manager.vms.lifecycle import start_vms, stop_vms, vm_status, wait_vms_down
from tapstream.site_manager.vms.plan import PlanError, PlannedVm, boot_plan, domain_name
from tapstream.site_manager.vms.settings import VmSettings

__all__ = [
    "ABSENT",
    "NoVms",
    "PlanError",
    "PlannedVm",
    "VmDriver",
    "VmError",
    "VmSettings",
    "boot_plan",
    "domain_name",
    "make_driver",
    "start_vms",
    "stop_vms",
    "vm_status",
    "wait_vms_down",
]

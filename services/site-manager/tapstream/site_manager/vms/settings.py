"""The site manager's VM driver settings: TAPSTREAM_SITE_MANAGER_VM_*."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tapstream.core.settings import TapstreamSettings


class VmSettings(TapstreamSettings):
    site_manager_vm_driver: Literal["none", "libvirt", "exec"] = Field(
        "none",
        description="Who brings the group's VMs up at the recovery site: none (the operator: a "
        "failover ends with NBD exports), libvirt (libvirt-python against libvirtd), exec (the "
        "command site_manager_vm_exec_command, see tapstream.site_manager.vms.exec_driver).",
    )
    site_manager_vm_libvirt_uri: str = Field(
        "",
        description="libvirt connection URI; empty: qemu:///system as root, else qemu:///session.",
    )
    site_manager_vm_domain_type: Literal["auto", "kvm", "qemu"] = Field(
        "auto",
        description="libvirt domain type: kvm (hardware virtualisation), qemu (TCG emulation), "
        "auto (kvm when /dev/kvm can be opened).",
    )
    site_manager_vm_exec_command: list[str] = Field(
        default_factory=list,
        description='The exec driver\'s command, JSON list (e.g. ["/usr/local/bin/dr-vms"]); '
        "called with the action (start, stop, state) as its last argument and a JSON request on stdin.",
    )
    site_manager_vm_start_timeout_s: float = Field(
        60.0, gt=0, description="How long one VM may take to be running before the next boots."
    )
    site_manager_vm_shutdown_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a VM may take to shut down cleanly (ACPI) before failback or reverse "
        "forces it off.",
    )
    site_manager_vm_test_network: str = Field(
        "",
        description="libvirt network a failover test's VMs join (make it an isolated one); empty: "
        "they get no network interface at all.",
    )

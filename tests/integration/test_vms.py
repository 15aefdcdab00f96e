"""VMs come up at the recovery site: a real guest (Debian's kernel, a busybox initramfs, QEMU under
libvirt, TCG) whose disk is the protected tapper's export writes files and powers off; `move` then
makes the recovery site manager (VM driver libvirt) boot the group's target VM from the moved disk,
and the guest finds its files and says so on its serial console. Before that, a failover test boots
a copy of the VM from the checkpoint's instant view, which finds them too, and is destroyed after. Reverse and failback shut it down
cleanly at the recovery site before the data moves back, and forget it."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from tapstream.site_manager.domain import VmSpec
from tapstream.site_manager.vms.domain_xml import domain_xml
from tapstream.site_manager.vms.libvirtd import ensure_libvirtd, system_uri
from tapstream.site_manager.vms.plan import PlannedVm

from .guest.console import said
from .guest.image import build_guest
from .services_harness import wait_until
from .site_manager_harness import (
    cli_env,
    site_converged,
    start_site_manager,
    tapstream,
    tapstream_json,
)

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
# TCG: nested KVM is not dependable on CI runners, and the guest is small enough to emulate.
RECOVERY_VMS = {
    "TAPSTREAM_SITE_MANAGER_VM_DRIVER": "libvirt",
    "TAPSTREAM_SITE_MANAGER_VM_DOMAIN_TYPE": "qemu",
    "TAPSTREAM_SITE_MANAGER_VM_SHUTDOWN_TIMEOUT_S": "20",
}


def gone(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return True
    return False


def test_move_boots_the_target_vm_from_the_moved_disk(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group, target = unique_name, f"{unique_name}-dr"
    guest = build_guest()
    ensure_libvirtd()
    conn = libvirt.open(system_uri())
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(16 * MIB)
    pm = start_site_manager(stack, tmp_path, "protected", [group])
    rm = start_site_manager(stack, tmp_path, "recovery", [group], RECOVERY_VMS)
    env = cli_env(stack, pm, rm, tmp_path)
    protected_vm, test_vm = f"{group}-prot", f"{target}-test"
    try:
        tapstream(env, "group", "create", group, "--journal-history", "60")
        tapstream(env, "group", "add-vm", group, "vm0", "--target", target)
        tapstream(env, "group", "add-volume", group, "vm0", "disk0", str(disk))
        # At the recovery site the same guest boots to check what the first boot wrote.
        shown = tapstream_json(
            env, "group", "define-vm", group, "vm0", "--memory", "256",
            "--kernel", str(guest.kernel), "--initrd", str(guest.initrd),
            "--cmdline", guest.cmdline("verify"),
        )  # fmt: skip
        assert shown["vms"][0]["spec"]["cmdline"].endswith("tapguest=verify")
        export = wait_until(
            "the protected tapper serving",
            lambda: (
                (s := tapstream_json(env, "group", "status", group))["converged"]
                and all(s["services"].values())
                and s.get("exports")
            ),
            timeout=60,
        )["disk0"]

        # Boot 1, on the protected site's hypervisor: the guest's disk is the tapper's export.
        first = tmp_path / "boot1.serial.log"
        spec = VmSpec(memory_mib=256, kernel=str(guest.kernel), initrd=str(guest.initrd),
                      cmdline=guest.cmdline("write"))  # fmt: skip
        vm = PlannedVm(protected_vm, "protected", group, "vm0", "failover", spec,
                       (("disk0", export),), "", first)  # fmt: skip
        conn.createXML(domain_xml(vm, "qemu"))  # transient: gone once the guest powers off
        wrote = wait_until("boot 1 writing its files", lambda: said(first, "WROTE"), timeout=180)
        wait_until("boot 1 powered off", lambda: gone(conn, protected_vm), timeout=60)
        checksum = wrote.group(2)
        # The recovery site learnt of the group meanwhile, through MirrorMaker 2 (all of it: its
        # last event is the VM's definition).
        wait_until(
            "the recovery site running the group",
            lambda: (s := site_converged(env, group, "recovery")) and s["group"]["vms"][0]["spec"],
            timeout=60,
        )

        # A failover test boots its own copy of the VM from the checkpoint's instant view (writes
        # go to an overlay), on the test network, and stopping the test destroys it.
        cp = tapstream(env, "group", "checkpoint", group, "--tag", "after-boot1").stdout.strip()
        wait_until(
            "the checkpoint in the recovery journal",
            lambda: any(c["id"] == cp for c in tapstream_json(env, "group", "checkpoints", group)),
            timeout=60,
        )
        op = tapstream_json(env, "failover-test", "start", group, "--checkpoint", cp)
        assert op["status"] == "succeeded", op
        assert op["result"][f"vm.{test_vm}"] == "running", op["result"]
        tested = rm.state_dir / "vms" / f"{test_vm}.serial.log"
        found = wait_until("the test VM checking the files", lambda: said(tested, "FOUND"),
                           timeout=180)  # fmt: skip
        assert (found.group(2), found.group(3)) == (checksum, "OK"), tested.read_text()[-2000:]
        assert tapstream_json(env, "failover-test", "stop", group)["status"] == "succeeded"
        assert gone(conn, test_vm), "the failover test's VM outlived the test"

        # Move: the recovery site manager boots the target VM on the promoted volume.
        op = tapstream_json(env, "move", group)
        assert op["status"] == "succeeded", op
        assert op["result"][f"vm.{target}"] == "running", op["result"]
        console = rm.state_dir / "vms" / f"{target}.serial.log"
        found = wait_until("boot 2 checking the files", lambda: said(console, "FOUND"), timeout=180)
        assert (found.group(2), found.group(3)) == (checksum, "OK"), console.read_text()[-2000:]
        # The guest powered itself off: recorded running, shut off now; both sites show it.
        wait_until(
            "the target VM shut off",
            lambda: conn.lookupByName(target).state()[0] == libvirt.VIR_DOMAIN_SHUTOFF,
            timeout=60,
        )
        st = tapstream_json(env, "group", "status", group, "--site", "recovery")
        assert st["vms"]["recovery"][target] == {
            "vm": "vm0", "purpose": "failover", "state": "running", "live": "shutoff",
        }, st["vms"]  # fmt: skip
        seen = wait_until(
            "the protected site seeing the recovery site's VM",
            lambda: tapstream_json(env, "group", "status", group)["vms"]["recovery"],
            timeout=30,
        )
        assert seen[target]["state"] == "running"
        overall = {g["group"]: g for g in tapstream_json(env, "status")}
        assert overall[group]["vms"]["recovery"][target]["live"] == "shutoff", overall[group]

        # Reverse, then failback: the recovery site forgets the VM before its writes are fenced.
        assert tapstream_json(env, "reverse", group)["status"] == "succeeded"
        op = tapstream_json(env, "failback", group)
        assert op["status"] == "succeeded", op
        steps = [s["step"] for s in op["steps"]]
        assert "VMs at the recovery site are down" in steps, steps
        assert steps.index("VMs at the recovery site are down") < steps.index(
            "writes stopped at the recovery site"
        ), steps
        assert gone(conn, target), "the recovery site's VM is still defined after failback"
        assert tapstream_json(env, "group", "status", group, "--site", "recovery")["vms"] == {
            "protected": {},
            "recovery": {},
        }
    finally:
        for name in (protected_vm, test_vm, target):
            if not gone(conn, name):
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
        conn.close()
        codes = (pm.stop(), rm.stop())
    assert codes == (0, 0)

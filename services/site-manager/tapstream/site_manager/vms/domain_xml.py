"""A planned VM as libvirt domain XML: pure. Disks are network disks on the NBD exports
(`<source protocol='nbd'>`), the serial console goes to a file, and the domain carries tapstream's
metadata (site, group, VM, purpose) so the driver finds its own domains again and never touches others."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

from tapstream.site_manager.vms.plan import PlannedVm

NS = "https://tapstream.dev/xmlns/vm/1"


def nbd_source(uri: str) -> ET.Element:
    """`<source protocol='nbd'>` of an NBD URI: nbd://host[:port]/export, nbds:// (TLS), or
    nbd+unix:///export?socket=PATH."""
    u = urlsplit(uri)
    source = ET.Element("source", protocol="nbd", name=u.path.lstrip("/"))
    if u.scheme in ("nbd", "nbds"):
        if not u.hostname:
            raise ValueError(f"NBD URI {uri!r} names no host")
        ET.SubElement(source, "host", name=u.hostname, port=str(u.port or 10809))
        if u.scheme == "nbds":
            source.set("tls", "yes")
    elif u.scheme == "nbd+unix":
        sock = parse_qs(u.query).get("socket", [""])[0]
        if not sock:
            raise ValueError(f"NBD URI {uri!r} names no socket")
        ET.SubElement(source, "host", transport="unix", socket=sock)
    else:
        raise ValueError(f"not an NBD URI: {uri!r}")
    return source


def domain_xml(vm: PlannedVm, domain_type: str = "qemu") -> str:
    """libvirt domain XML for `vm`; `domain_type` kvm or qemu (TCG)."""
    d = ET.Element("domain", type=domain_type)
    ET.SubElement(d, "name").text = vm.domain
    meta = ET.SubElement(d, "metadata")
    ET.SubElement(
        meta,
        f"{{{NS}}}vm",
        {"site": vm.site, "group": vm.group, "vm": vm.vm, "purpose": vm.purpose},
    )
    ET.SubElement(d, "memory", unit="MiB").text = str(vm.spec.memory_mib)
    ET.SubElement(d, "vcpu").text = str(vm.spec.vcpus)
    os_ = ET.SubElement(d, "os")
    ET.SubElement(os_, "type").text = "hvm"
    if vm.spec.kernel:
        ET.SubElement(os_, "kernel").text = vm.spec.kernel
        if vm.spec.initrd:
            ET.SubElement(os_, "initrd").text = vm.spec.initrd
        if vm.spec.cmdline:
            ET.SubElement(os_, "cmdline").text = vm.spec.cmdline
    else:
        ET.SubElement(os_, "boot", dev="hd")
    features = ET.SubElement(d, "features")
    ET.SubElement(features, "acpi")  # a clean shutdown is an ACPI power button press
    # A guest that powers off or crashes stays down: the operator (or the next operation) decides.
    ET.SubElement(d, "on_poweroff").text = "destroy"
    ET.SubElement(d, "on_reboot").text = "restart"
    ET.SubElement(d, "on_crash").text = "destroy"
    devices = ET.SubElement(d, "devices")
    for i, (_volume, uri) in enumerate(vm.disks):
        disk = ET.SubElement(devices, "disk", type="network", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw")
        disk.append(nbd_source(uri))
        ET.SubElement(disk, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
    if vm.network:
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network=vm.network)
        ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(vm.serial_log), append="off")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    ET.register_namespace("tapstream", NS)
    return ET.tostring(d, encoding="unicode")

"""The VM driver's pure parts (boot plan, domain XML) and the exec driver against a real script."""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tapstream.site_manager.domain import ProtectionGroup, VmSpec
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.vms import PlanError, VmError, VmSettings, boot_plan, make_driver
from tapstream.site_manager.vms.domain_xml import NS, domain_xml, nbd_source

EXPORTS = {"root": "nbd://10.0.0.5:10809/root", "data": "nbd://10.0.0.5:10809/data",
           "db": "nbd://10.0.0.5:10810/db"}  # fmt: skip


def group() -> ProtectionGroup:
    g = ProtectionGroup("g1")
    for cmd in (
        c.CreateGroup(),
        c.AddVm("web", "web-dr"),
        c.AddVolume("web", "root", "/v/root.img"),
        c.AddVolume("web", "data", "/v/data.img"),
        c.AddVm("db"),
        c.AddVolume("db", "db", "/v/db.img"),
        c.AddVm("cache"),  # no definition: the operator starts it
        c.DefineVm(
            "web", {"vcpus": 2, "disks": ["data", "root"], "network": "dr-net", "boot_order": 2}
        ),
        c.DefineVm("db", {"memory_mib": 2048, "boot_order": 1}),
    ):
        for ev in g.decide(cmd):
            g.apply(ev)
    return g


def test_the_plan_boots_defined_vms_in_order_on_their_exports(tmp_path: Path) -> None:
    plan = boot_plan("recovery", group(), EXPORTS, "failover", tmp_path)
    assert [(p.domain, p.vm) for p in plan] == [("db", "db"), ("web-dr", "web")]
    web = plan[1]
    assert web.disks == (("data", EXPORTS["data"]), ("root", EXPORTS["root"]))
    assert (web.network, web.site, web.serial_log) == (
        "dr-net",
        "recovery",
        tmp_path / "web-dr.serial.log",
    )
    # A failover test's copies: their own names, never the production network.
    test = boot_plan("recovery", group(), EXPORTS, "test", tmp_path, test_network="")
    assert [(p.domain, p.network) for p in test] == [("db-test", ""), ("web-dr-test", "")]
    with pytest.raises(PlanError, match=r"'web': no export for its disks \['root'\]"):
        boot_plan(
            "recovery", group(), {"data": "nbd://h/data", "db": "nbd://h/db"}, "failover", tmp_path
        )


def test_domain_xml_puts_each_disk_on_its_nbd_export_and_tags_the_domain(tmp_path: Path) -> None:
    web = boot_plan("recovery", group(), EXPORTS, "failover", tmp_path)[1]
    d = ET.fromstring(domain_xml(web, "kvm"))
    assert d.get("type") == "kvm" and d.findtext("name") == "web-dr"
    assert (d.findtext("vcpu"), d.find("memory").get("unit"), d.findtext("memory")) == (
        "2",
        "MiB",
        "512",
    )
    disks = d.findall("devices/disk")
    assert [x.find("target").get("dev") for x in disks] == ["vda", "vdb"]
    src = disks[1].find("source")
    assert (src.get("protocol"), src.get("name")) == ("nbd", "root")
    assert src.find("host").attrib == {"name": "10.0.0.5", "port": "10809"}
    assert d.find("devices/interface/source").get("network") == "dr-net"
    assert d.find("devices/serial/source").get("path") == str(tmp_path / "web-dr.serial.log")
    assert d.find(f"metadata/{{{NS}}}vm").attrib == {
        "site": "recovery", "group": "g1", "vm": "web", "purpose": "failover"}  # fmt: skip
    assert d.find("os/boot").get("dev") == "hd" and d.find("os/kernel") is None
    db = ET.fromstring(domain_xml(boot_plan("recovery", group(), EXPORTS, "test", tmp_path)[0]))
    assert db.find("devices/interface") is None  # no network: no NIC at all


def test_nbd_sources() -> None:
    tls = nbd_source("nbds://h:1234/v")
    assert tls.get("tls") == "yes" and tls.find("host").attrib == {"name": "h", "port": "1234"}
    assert nbd_source("nbd://h/v").find("host").get("port") == "10809"
    unix = nbd_source("nbd+unix:///v?socket=/run/t.sock")
    assert unix.find("host").attrib == {"transport": "unix", "socket": "/run/t.sock"}
    for bad in ("http://h/v", "nbd:///v", "nbd+unix:///v"):
        with pytest.raises(ValueError):
            nbd_source(bad)


def test_the_exec_driver_runs_the_documented_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "vms.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s " "$1" >> {calls}; cat >> {calls}; echo >> {calls}\n'
        'case "$1" in\n'
        '  state) echo \'{"web-dr": "running"}\' ;;\n'
        "  stop) echo destroyed ;;\n"
        '  start) if [ -n "$FAIL" ]; then echo "no capacity" >&2; exit 3; fi ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    settings = VmSettings(site_manager_vm_driver="exec", site_manager_vm_exec_command=[str(script)])
    driver = make_driver(settings)
    web = boot_plan("recovery", group(), EXPORTS, "failover", tmp_path)[1]

    async def go() -> tuple[str, str, dict[str, str]]:
        return (
            await driver.start(web),
            await driver.stop("web-dr", graceful=True),
            await driver.states(["web-dr", "db"]),
        )

    assert asyncio.run(go()) == ("running", "destroyed", {"web-dr": "running", "db": "absent"})
    lines = [line.split(" ", 1) for line in calls.read_text().splitlines()]
    assert [a for a, _ in lines] == ["start", "state", "stop", "state"]
    started = json.loads(lines[0][1])
    assert started["disks"] == [{"volume": "data", "export": EXPORTS["data"]},
                                {"volume": "root", "export": EXPORTS["root"]}]  # fmt: skip
    assert started["spec"]["vcpus"] == 2 and started["purpose"] == "failover"
    assert json.loads(lines[2][1]) == {"domain": "web-dr", "graceful": True, "timeout_s": 120.0}
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(VmError, match="failed \\(3\\): no capacity"):
        asyncio.run(driver.start(web))


def test_drivers_by_setting() -> None:
    assert make_driver(VmSettings()).name == "none"
    with pytest.raises(VmError, match="EXEC_COMMAND"):
        make_driver(VmSettings(site_manager_vm_driver="exec"))
    assert make_driver(VmSettings(site_manager_vm_driver="libvirt")).name == "libvirt"
    assert VmSpec().disk_volumes(["b", "a"]) == ["a", "b"]


def test_the_kubevirt_example_is_a_vm_on_a_block_claim_of_the_export() -> None:
    import string

    import yaml

    root = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "kubevirt"
    values = {"DOMAIN": "web-dr", "GROUP": "g1", "VM": "web", "PURPOSE": "failover", "VOLUME": "root",
              "SIZE": "1073741824", "NBD_DEVICE": "nbd0", "NODE": "n1", "VCPUS": "2",
              "MEMORY_MIB": "512"}  # fmt: skip
    text = string.Template((root / "virtualmachine.yaml").read_text()).substitute(values)
    pv, pvc, vm = yaml.safe_load_all(text)
    assert (pv["kind"], pvc["kind"], vm["kind"]) == (
        "PersistentVolume",
        "PersistentVolumeClaim",
        "VirtualMachine",
    )
    assert pv["spec"]["local"]["path"] == "/dev/nbd0" and pv["spec"]["volumeMode"] == "Block"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    spec = vm["spec"]["template"]["spec"]
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert spec["domain"]["devices"]["disks"][0]["name"] == spec["volumes"][0]["name"]
    assert os.access(root / "tapstream-kubevirt-vms", os.X_OK)

"""The `libvirt` VM driver: libvirt-python against a running libvirtd (qemu:///system as root,
else qemu:///session). Domains are persistent while they live, so a VM that powered itself off
still shows (shutoff) until the driver stops it; stopping undefines it. Only domains carrying
tapstream's metadata are ever replaced or stopped: a same-named VM of someone else is an error."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

from tapstream.core.logging import get_logger
from tapstream.site_manager.vms.domain_xml import NS, domain_xml
from tapstream.site_manager.vms.driver import ABSENT, VmError
from tapstream.site_manager.vms.libvirtd import system_uri
from tapstream.site_manager.vms.plan import PlannedVm
from tapstream.site_manager.vms.settings import VmSettings

log = get_logger("tapstream.site_manager.vms")

STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",  # being shut down
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise VmError(
            "the libvirt VM driver needs libvirt-python (pip install libvirt-python; Debian: "
            "libvirt-dev and pkg-config to build it) or set TAPSTREAM_SITE_MANAGER_VM_DRIVER=none"
        ) from None
    return libvirt


class LibvirtDriver:
    name = "libvirt"

    def __init__(self, settings: VmSettings) -> None:
        self.settings = settings
        self.uri = settings.site_manager_vm_libvirt_uri or system_uri()
        self._conn: Any = None
        self._lock = threading.Lock()  # one libvirt connection, used from worker threads

    def _connect(self) -> Any:
        libvirt = _libvirt()
        if self._conn is None or not self._conn.isAlive():
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise VmError(
                    f"cannot reach libvirt at {self.uri}: {exc} (is libvirtd running? "
                    "`libvirtd -d`, or python -m tapstream.site_manager.vms.libvirtd)"
                ) from None
        return self._conn

    def domain_type(self) -> str:
        t = self.settings.site_manager_vm_domain_type
        if t != "auto":
            return t
        return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"

    def _lookup(self, conn: Any, domain: str) -> Any | None:
        libvirt = _libvirt()
        try:
            return conn.lookupByName(domain)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    @staticmethod
    def _ours(dom: Any) -> dict[str, str] | None:
        """tapstream's metadata of a domain (group, vm, purpose); None: not one of ours."""
        libvirt = _libvirt()
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
        except libvirt.libvirtError:
            return None
        return dict(ET.fromstring(xml).attrib)

    # --- blocking parts (run in a worker thread) -------------------------------------------------
    def _start(self, vm: PlannedVm) -> str:
        with self._lock:
            conn = self._connect()
            old = self._lookup(conn, vm.domain)
            if old is not None:
                if self._ours(old) is None:
                    raise VmError(
                        f"a domain named {vm.domain!r} exists at this site and is not tapstream's: "
                        "rename the target VM (`tapstream group pair`) or remove that domain"
                    )
                self._remove(old)  # a leftover of an earlier operation: replaced
            vm.serial_log.parent.mkdir(parents=True, exist_ok=True)
            dom = conn.defineXML(domain_xml(vm, self.domain_type()))
            try:
                dom.create()
            except Exception as exc:
                self._remove(dom)
                raise VmError(f"VM {vm.domain!r} did not start: {exc}") from None
        deadline = time.monotonic() + self.settings.site_manager_vm_start_timeout_s
        while True:
            state = STATES.get(dom.state()[0], "unknown")
            if state == "running":
                return state
            if state in ("shutoff", "crashed") or time.monotonic() > deadline:
                raise VmError(f"VM {vm.domain!r} is {state}, not running")
            time.sleep(0.1)

    def _remove(self, dom: Any) -> str:
        libvirt = _libvirt()
        how = "destroyed" if dom.isActive() else "shutdown"
        if dom.isActive():
            dom.destroy()
        try:
            dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        return how

    def _stop(self, domain: str, graceful: bool) -> str:
        with self._lock:
            conn = self._connect()
            dom = self._lookup(conn, domain)
            if dom is None:
                return ABSENT
            if self._ours(dom) is None:
                raise VmError(f"domain {domain!r} is not tapstream's: left alone")
            if graceful and dom.isActive():
                dom.shutdown()
        if graceful:
            deadline = time.monotonic() + self.settings.site_manager_vm_shutdown_timeout_s
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if dom.isActive():
                log.warning("VM did not shut down in time: forced off", domain=domain)
        with self._lock:
            return self._remove(dom)

    def _states(self, domains: list[str]) -> dict[str, str]:
        with self._lock:
            conn = self._connect()
            out = {}
            for d in domains:
                dom = self._lookup(conn, d)
                out[d] = ABSENT if dom is None else STATES.get(dom.state()[0], "unknown")
            return out

    def _owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        with self._lock:
            out = {}
            for dom in self._connect().listAllDomains():
                meta = self._ours(dom)
                if meta is not None and (meta.get("group"), meta.get("site")) == (group, site):
                    out[dom.name()] = {
                        "vm": meta.get("vm", ""),
                        "purpose": meta.get("purpose", ""),
                        "state": STATES.get(dom.state()[0], "unknown"),
                    }
            return out

    # --- the interface ---------------------------------------------------------------------------
    async def start(self, vm: PlannedVm) -> str:
        return await asyncio.to_thread(self._start, vm)

    async def stop(self, domain: str, graceful: bool) -> str:
        return await asyncio.to_thread(self._stop, domain, graceful)

    async def states(self, domains: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(self._states, domains)

    async def owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        return await asyncio.to_thread(self._owned, group, site)

"""The `exec` VM driver: where libvirt is not wanted (another hypervisor, KubeVirt, a cloud API),
the site manager calls one command of the operator's for each step.

Contract (TAPSTREAM_SITE_MANAGER_VM_EXEC_COMMAND, a JSON list; the action is appended):

- `CMD start`, stdin `{"domain", "group", "vm", "purpose": "failover"|"test", "spec": {vcpus,
  memory_mib, disks, network, boot_order, kernel, initrd, cmdline}, "disks": [{"volume",
  "export": "nbd://host:port/name"}], "network", "serial_log"}`: bring the VM up on those exports;
  exit 0 once it runs (the next VM in boot order waits for that).
- `CMD stop`, stdin `{"domain", "graceful": bool, "timeout_s"}`: shut it down (graceful: cleanly,
  forced after timeout_s) and forget it; stdout may name how it ended (shutdown|destroyed|absent).
- `CMD state`, stdin `{"domains": [...]}`: stdout a JSON object domain -> state (running, shutoff,
  absent, ...).

A non-zero exit fails the step with the command's stderr. Each call may take the start or shutdown
timeout (plus 30 s) before it is killed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tapstream.site_manager.vms.driver import ABSENT, VmError
from tapstream.site_manager.vms.plan import PlannedVm
from tapstream.site_manager.vms.settings import VmSettings


class ExecDriver:
    name = "exec"

    def __init__(self, settings: VmSettings) -> None:
        if not settings.site_manager_vm_exec_command:
            raise VmError(
                "TAPSTREAM_SITE_MANAGER_VM_DRIVER=exec needs TAPSTREAM_SITE_MANAGER_VM_EXEC_COMMAND "
                '(a JSON list, e.g. ["/usr/local/bin/dr-vms"])'
            )
        self.settings = settings
        self.command = list(settings.site_manager_vm_exec_command)

    async def _call(self, action: str, request: dict[str, Any], timeout: float) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            action,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(request).encode()), timeout + 30
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise VmError(
                f"{self.command[0]} {action} did not finish in {timeout + 30:.0f}s"
            ) from None
        if proc.returncode != 0:
            raise VmError(
                f"{self.command[0]} {action} failed ({proc.returncode}): "
                f"{err.decode(errors='replace').strip()[-2000:]}"
            )
        return out.decode(errors="replace").strip()

    async def start(self, vm: PlannedVm) -> str:
        await self._call("start", vm.to_json(), self.settings.site_manager_vm_start_timeout_s)
        return (await self.states([vm.domain])).get(vm.domain, "running")

    async def stop(self, domain: str, graceful: bool) -> str:
        timeout = self.settings.site_manager_vm_shutdown_timeout_s
        out = await self._call(
            "stop", {"domain": domain, "graceful": graceful, "timeout_s": timeout}, timeout
        )
        return out.splitlines()[-1] if out else ("shutdown" if graceful else "destroyed")

    async def states(self, domains: list[str]) -> dict[str, str]:
        if not domains:
            return {}
        out = await self._call("state", {"domains": domains}, 30)
        try:
            answer = json.loads(out or "{}")
        except ValueError:
            raise VmError(
                f"{self.command[0]} state printed no JSON object: {out[:200]!r}"
            ) from None
        if not isinstance(answer, dict):
            raise VmError(f"{self.command[0]} state printed {type(answer).__name__}, not an object")
        return {d: str(answer.get(d, ABSENT)) for d in domains}

    async def owned(self, group: str, site: str) -> dict[str, dict[str, str]]:
        return {}

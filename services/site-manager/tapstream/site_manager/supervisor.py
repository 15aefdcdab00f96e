"""This site's local agent: runs tapstream services (tapper, VDSA, journal) and qemu-nbd as child
processes, each identified by a name and its configuration. `ensure` restarts a child only when its
configuration changed; `stop` sends SIGTERM and waits. In production the tapper runs beside each
hypervisor (DaemonSet) configured the same way; locally the site manager starts it.

The data path does not depend on the control plane: each child runs in its own session and is
recorded in `<run_dir>/<name>.json` (pid, command line, configuration). A site manager that stops
may leave its children running (`TAPSTREAM_SITE_MANAGER_STOP_SERVICES=false`); the next one adopts
every child whose pid still runs the recorded command line, so VMs keep their disks meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tapstream.core.logging import get_logger

log = get_logger("tapstream.site_manager.supervisor")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    pid: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # None: adopted from an earlier site manager
    ready: bool = False  # started and (where it serves NBD) answering

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _runs(self.pid, self.argv)


class Supervisor:
    def __init__(self, run_dir: Path, stop_timeout_s: float = 30.0) -> None:
        self.run_dir = run_dir
        self.log_dir = run_dir
        self.stop_timeout_s = stop_timeout_s
        self.children: dict[str, Child] = {}

    def adopt(self) -> list[str]:
        """Take over the children an earlier site manager left running; forget the dead ones."""
        adopted = []
        for record in sorted(self.run_dir.glob("*.json")) if self.run_dir.exists() else []:
            try:
                info = json.loads(record.read_text())
                child = Child(
                    record.stem,
                    info["argv"],
                    info["env"],
                    info["pid"],
                    Path(info["log"]),
                    ready=True,
                )
            except (ValueError, KeyError, OSError):
                record.unlink(missing_ok=True)
                continue
            if child.alive():
                self.children[child.name] = child
                adopted.append(child.name)
            else:
                record.unlink(missing_ok=True)
        if adopted:
            log.info("adopted running services", children=adopted)
        return adopted

    def running(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.ready and child.alive()

    def pid(self, name: str) -> int | None:
        child = self.children.get(name)
        return child.pid if child is not None and child.alive() else None

    async def ensure(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        ready_port: int | None = None,
        ready_timeout_s: float = 60.0,
    ) -> Child:
        child = self.children.get(name)
        if child is not None and child.alive() and child.argv == argv and child.env == env:
            return child
        if child is not None:
            await self.stop(name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        with open(path, "ab") as out:  # noqa: ASYNC230 - a log file, opened once
            proc = subprocess.Popen(  # noqa: ASYNC220 - fork/exec returns at once
                argv, env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True
            )
        child = self.children[name] = Child(name, argv, env, proc.pid, path, proc)
        (self.run_dir / f"{name}.json").write_text(
            json.dumps({"pid": proc.pid, "argv": argv, "env": env, "log": str(path)})
        )
        log.info("started", child=name, pid=proc.pid, log=str(path))
        if ready_port is not None:
            await self._wait_listening(child, ready_port, ready_timeout_s)
        child.ready = True
        return child

    async def python(
        self, name: str, module: str, env: dict[str, str], ready_port: int | None = None
    ) -> Child:
        return await self.ensure(name, [sys.executable, "-m", module], env, ready_port)

    async def _wait_listening(self, child: Child, port: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if not child.alive():
                code = child.proc.returncode if child.proc else "?"
                raise RuntimeError(
                    f"{child.name} exited with {code}; see {child.log}:\n"
                    + child.log.read_text(errors="replace")[-2000:]
                )
            if await asyncio.to_thread(_nbd_answers, port):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{child.name} did not listen on port {port} within {within_s:.0f}s; see {child.log}"
        )

    async def stop(self, name: str) -> int | None:
        child = self.children.pop(name, None)
        (self.run_dir / f"{name}.json").unlink(missing_ok=True)
        if child is None or not child.alive():
            return None if child is None or child.proc is None else child.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        if not await _gone(child, self.stop_timeout_s):
            log.error(
                "child did not stop in time; killing it", child=name, timeout_s=self.stop_timeout_s
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            await _gone(child, 30)
        code = child.proc.returncode if child.proc is not None else None
        log.info("stopped", child=name, code=code)
        return code

    async def stop_all(self, prefix: str = "") -> None:
        names = [n for n in self.children if n.startswith(prefix)]
        await asyncio.gather(*(self.stop(n) for n in names))


async def _gone(child: Child, within_s: float) -> bool:
    """Poll until the child ended (an adopted one is no child of ours: no wait() to block on)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not child.alive():
            return True
        await asyncio.sleep(0.05)
    return not child.alive()


def _runs(pid: int, argv: list[str]) -> bool:
    """Whether `pid` is alive (not a zombie) and runs `argv` (a recycled pid runs something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and cmdline.rstrip(b"\0").split(b"\0") == [a.encode() for a in argv]


def _nbd_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(8) == b"NBDMAGIC"
    except OSError:
        return False

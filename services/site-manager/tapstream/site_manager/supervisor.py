"""This site's local agent: runs tapstream services (tapper, VDSA, journal) and qemu-nbd as child
processes, each identified by a name and its configuration. `ensure` restarts a child only when its
configuration changed; `stop` sends SIGTERM and waits. In production the tapper runs beside each
hypervisor (DaemonSet) configured the same way; locally the site manager starts it."""

from __future__ import annotations

import asyncio
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
    proc: subprocess.Popen[bytes]
    log: Path
    ready: bool = False  # started and (where it serves NBD) answering


class Supervisor:
    def __init__(self, log_dir: Path, stop_timeout_s: float = 30.0) -> None:
        self.log_dir = log_dir
        self.stop_timeout_s = stop_timeout_s
        self.children: dict[str, Child] = {}

    def running(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.ready and child.proc.poll() is None

    async def ensure(self, name: str, argv: list[str], env: dict[str, str], ready_port: int | None = None,
                     ready_timeout_s: float = 60.0) -> Child:
        child = self.children.get(name)
        if child is not None and child.proc.poll() is None and child.argv == argv and child.env == env:
            return child
        if child is not None:
            await self.stop(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        with open(path, "ab") as out:  # noqa: ASYNC230 - a log file, opened once
            proc = subprocess.Popen(  # noqa: ASYNC220 - fork/exec returns at once
                argv, env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True)
        child = self.children[name] = Child(name, argv, env, proc, path)
        log.info("started", child=name, pid=proc.pid, log=str(path))
        if ready_port is not None:
            await self._wait_listening(child, ready_port, ready_timeout_s)
        child.ready = True
        return child

    async def python(self, name: str, module: str, env: dict[str, str], ready_port: int | None = None) -> Child:
        return await self.ensure(name, [sys.executable, "-m", module], env, ready_port)

    async def _wait_listening(self, child: Child, port: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {child.log}:\n"
                                   + child.log.read_text(errors="replace")[-2000:])
            if await asyncio.to_thread(_nbd_answers, port):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{child.name} did not listen on port {port} within {within_s:.0f}s; see {child.log}")

    async def stop(self, name: str) -> int | None:
        child = self.children.pop(name, None)
        if child is None or child.proc.poll() is not None:
            return None if child is None else child.proc.returncode
        child.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(child.proc.wait, self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.error("child did not stop in time; killing it", child=name, timeout_s=self.stop_timeout_s)
            child.proc.kill()
            code = await asyncio.to_thread(child.proc.wait)
        log.info("stopped", child=name, code=code)
        return code

    async def stop_all(self, prefix: str = "") -> None:
        names = [n for n in self.children if n.startswith(prefix)]
        await asyncio.gather(*(self.stop(n) for n in names))


def _nbd_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(8) == b"NBDMAGIC"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Background processes with pid files: start detached, find alive, stop without leaving orphans.

A pid alone can be reused by an unrelated process (after a reboot, say), so every process is also
known by a marker: a string of its command line that only it has (the path of its config file).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def read_pid(pid_file: Path, marker: str | None = None) -> int | None:
    """The pid in `pid_file` if that process is alive (and its command line holds `marker`)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not alive(pid):
        return None
    if marker is not None and marker not in cmdline(pid):
        return None
    return pid


def find(marker: str) -> list[int]:
    """Every live process whose command line holds `marker` (finds ours when a pid file is lost)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            pid = int(entry.name)
            if marker in cmdline(pid, settle=False) and alive(pid):
                found.append(pid)
    return found


def cmdline(pid: int, settle: bool = True) -> str:
    """The command line of `pid` ('' if it is gone, or for a kernel thread)."""
    # Right after exec the kernel can show an empty command line for a moment: look again.
    for _ in range(50 if settle else 1):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return ""
        if raw or not settle or not alive(pid):
            break
        time.sleep(0.01)
    return raw.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start(cmd: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None) -> int:
    """Start `cmd` in its own session (so a Ctrl-C of `make up` does not kill it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop(pid_file: Path, marker: str | None = None, timeout_s: float = 30.0) -> bool:
    """SIGTERM our process (found by pid file, else by marker) and its group, SIGKILL after
    `timeout_s`; True if something was running."""
    pids = [p for p in [read_pid(pid_file, marker)] if p is not None]
    if not pids and marker is not None:
        pids = find(marker)
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
        _signal_group(pid, signal.SIGCONT)  # a stopped (frozen) process handles SIGTERM only then
    deadline = time.monotonic() + timeout_s
    while any(_group_alive(p) for p in pids) and time.monotonic() < deadline:
        for p in pids:
            _reap(p)
        time.sleep(0.1)
    for pid in pids:
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
        while _group_alive(pid):
            _reap(pid)
            time.sleep(0.05)
        # It may have exited between two checks above: a child of ours is then a zombie until
        # reaped, and its pid still answers kill(pid, 0).
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return bool(pids)


def _group_alive(pid: int) -> bool:
    """`pid` or any process of the group it leads is alive (children must not outlive it)."""
    if alive(pid):
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[2] == str(pid) and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


def _signal_group(pid: int, sig: int) -> None:
    # Our processes lead their own session (start_new_session), so the group id is their pid.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # gone (or going: ProcessLookupError while reading)
        pass
    return 0

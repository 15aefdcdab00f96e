"""Start tapstream services (journal, VDSA) as real processes for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def start_service(
    stack, module: str, tmp: Path, env: dict[str, str], name: str
) -> subprocess.Popen[bytes]:
    log = tmp / f"{name}.log"
    out = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", module], env={**stack.env, **env}, stdout=out, stderr=out
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
    return proc.wait(timeout)


def wait_until(
    what: str, check: Callable[[], object], timeout: float = 90, interval: float = 0.2
) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def groups_env(prefix: str, group: str) -> dict[str, str]:
    return {f"TAPSTREAM_{prefix}_GROUPS": json.dumps([group])}


def metric(port: int, name: str) -> float:
    """Sum of a Prometheus metric's samples (every label set) at a process's /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def start_recovery_vdsa(
    stack, tmp: Path, groups: list[str], replicas: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A recovery-site VDSA applying at once (no journal history) to replicas under `replicas`."""
    env = {
        "TAPSTREAM_VDSA_GROUPS": json.dumps(groups),
        "TAPSTREAM_SITE": "recovery",
        "TAPSTREAM_REPLICA_DIR": str(replicas),
        "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "0",
        "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
        **(extra or {}),
    }
    return start_service(stack, "tapstream.vdsa", tmp, env, "vdsa")


def replica_equals(image: Path, volume: Path) -> bool:
    """The replica image holds the volume's bytes (it is only as long as the furthest write)."""
    if not image.exists():
        return False
    got, want = image.read_bytes(), volume.read_bytes()
    return len(got) <= len(want) and got + bytes(len(want) - len(got)) == want

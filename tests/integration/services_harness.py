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

"""Runs the real tapper as a process (so tests can SIGTERM or SIGKILL it) and replays its stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.ports import free_port
from tapstream.core.replay import VolumeReplay, replay_volume
from tapstream.core.settings import TapstreamSettings


@dataclass
class TapperProcess:
    proc: subprocess.Popen[bytes]
    port: int
    group: str
    log: Path

    def uri(self, volume: str) -> str:
        return f"nbd://127.0.0.1:{self.port}/{volume}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_tapper(
    stack,
    tmp: Path,
    group: str,
    volumes: dict[str, Path],
    mode: str = "sync",
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> TapperProcess:
    port = free_port()
    env = {
        **stack.env,
        "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
            [{"name": n, "path": str(p), "group": group, "mode": mode} for n, p in volumes.items()]
        ),
        "TAPSTREAM_TAPPER_LISTEN_PORT": str(port),
        "TAPSTREAM_TAPPER_STATE_DIR": str(tmp / "tapper-state"),
        "TAPSTREAM_TAPPER_HOST_ID": "test-host",
        "TAPSTREAM_LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    log = tmp / f"tapper-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapstream.tapper"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tapper exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8) == b"NBDMAGIC":
                    return TapperProcess(proc, port, group, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"tapper did not listen within {timeout}s:\n{log.read_text()[-3000:]}")


def native_writes(log: Path) -> dict[str, int]:
    """Writes the compiled data path served, per volume, from the tapper's log at its stop."""
    out = {}
    for line in log.read_text().splitlines():
        if '"compiled data path totals"' in line:
            rec = json.loads(line)
            out[rec["volume"]] = rec["writes"]
    return out


def replay(stack, group: str, volume: str, out: Path, size: int) -> VolumeReplay:
    settings: TapstreamSettings = stack.settings
    return replay_volume(
        client_config(settings),
        settings.topic(f"writes.{group}"),
        volume,
        str(out),
        size,
        make_codec(settings),
    )


def run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert res.returncode == 0, (
        f"{cmd[0]} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    )
    return res


def qemu_write(uri: str, offset: int, pattern: int, length: int = 65536) -> None:
    """One write of `length` bytes of `pattern` at `offset`, through NBD with qemu-io."""
    run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} {offset} {length}", uri])


def images_equal(a: Path, b: Path) -> None:
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(a), str(b)])
    assert os.path.getsize(a) == os.path.getsize(b)


def blank_volume(tmp: Path, name: str, size: int) -> Path:
    """A sparse raw image of `size` bytes, `<tmp>/<name>.img`."""
    p = tmp / f"{name}.img"
    with open(p, "wb") as f:
        f.truncate(size)
    return p

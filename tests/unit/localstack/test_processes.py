"""Pid files and stopping: a stopped process leaves no child behind (real `sh`/`sleep`, ~0.2 s)."""

import os
import sys
import time
from pathlib import Path

import pytest

from tapstream.localstack import processes


def test_stop_ends_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    child_pid_file = tmp_path / "child.pid"
    # A parent that ignores SIGTERM, with a child: both must be gone afterwards.
    script = f"trap '' TERM; sleep 60 & echo $! > {child_pid_file}; wait"
    pid = processes.start(["sh", "-c", script], pid_file, tmp_path / "x.log")
    deadline = time.monotonic() + 10
    while not (child_pid_file.exists() and child_pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the test's child never started"
        time.sleep(0.01)
    child = int(child_pid_file.read_text())
    assert processes.stop(pid_file, timeout_s=0.5) is True
    assert not processes.alive(pid) and not processes.alive(child)
    assert not pid_file.exists()


def test_a_process_is_known_by_its_marker_even_without_its_pid_file(tmp_path: Path) -> None:
    marker = str(tmp_path / "unique-marker.conf")
    pid_file = tmp_path / "x.pid"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    pid = processes.start(sleeper, pid_file, tmp_path / "x.log")
    try:
        assert processes.read_pid(pid_file, marker) == pid
        # a reused pid: alive, but someone else's
        assert processes.read_pid(pid_file, "not-in-its-command-line") is None
        assert processes.find(marker) == [pid]
        pid_file.unlink()
        assert processes.stop(pid_file, marker) is True
        assert not processes.alive(pid)
        assert processes.stop(pid_file, marker) is False
    finally:
        processes.stop(pid_file, marker)


def test_a_stopped_child_is_reaped_not_left_a_zombie(tmp_path: Path) -> None:
    """Our own child, stopped: its pid is gone from the process table (no zombie answering
    kill(pid, 0)), however fast it exited; `up` tells a restarted process by that."""
    for i in range(5):  # the exit races the checks in stop(): try it a few times
        pid_file = tmp_path / f"z{i}.pid"
        pid = processes.start(["sleep", "60"], pid_file, tmp_path / "z.log")
        assert processes.stop(pid_file) is True
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_port_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert processes.port_in_use(port)
    assert not processes.port_in_use(port)

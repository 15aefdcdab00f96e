"""Pid files and stopping: a stopped process leaves no child behind (real `sh`/`sleep`, ~0.2 s)."""

import time
from pathlib import Path

from tapstream.localstack import processes


def test_stop_ends_the_whole_group_and_finds_a_process_by_marker(tmp_path: Path) -> None:
    marker = str(tmp_path / "unique-marker.conf")
    pid_file = tmp_path / "x.pid"
    child_pid_file = tmp_path / "child.pid"
    # A parent that ignores SIGTERM with a child: both must be gone afterwards.
    script = f"trap '' TERM; sleep 60 & echo $! > {child_pid_file}; wait; : {marker}"
    pid = processes.start(["sh", "-c", script], pid_file, tmp_path / "x.log")
    assert processes.read_pid(pid_file, marker) == pid
    assert processes.read_pid(pid_file, "not-in-its-command-line") is None
    assert processes.find(marker) == [pid]
    deadline = time.monotonic() + 10
    while not (child_pid_file.exists() and child_pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the test's child never started"
        time.sleep(0.01)
    child = int(child_pid_file.read_text())
    pid_file.unlink()  # a lost pid file: the marker still finds it
    assert processes.stop(pid_file, marker, timeout_s=0.5) is True
    assert not processes.alive(pid) and not processes.alive(child)
    assert processes.stop(pid_file, marker) is False


def test_port_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert processes.port_in_use(port)
    assert not processes.port_in_use(port)

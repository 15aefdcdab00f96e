"""Real I/O errors on the protected volume (issue 10, item 7 "Local faults"; DESIGN §4).

The failing disk: nbdkit's file plugin behind its `error` filter, exposed as a regular file by
nbdfuse; writes, zeroes and trims fail with EIO while a trigger file exists. nbdfuse serves the
file write-through (no FUSE page cache), so the EIO surfaces at the tapper's pwrite with its plain
O_RDWR open; nbdkit 1.32's error filter cannot fail a flush, so a failed fdatasync is covered by
tests/unit/tapper/test_local_faults.py instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.ports import free_port
from tapstream.core.replay import read_stream
from tapstream.localstack import faults

from .services_harness import metric, wait_until
from .tapper_harness import blank_volume, images_equal, replay, start_tapper

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("nbdfuse") and shutil.which("nbdkit") and os.path.exists("/dev/fuse")),
        reason="needs nbdkit, nbdfuse and /dev/fuse",
    ),
]
SIZE = 4 * 1024 * 1024
K64 = 64 * 1024


@dataclass
class FailingDisk:
    backing: Path  # what the disk really holds
    path: Path  # the FUSE file the tapper serves
    trigger: Path  # while it exists, writes, zeroes and trims fail with EIO
    log: Path

    def injected(self) -> int:
        return self.log.read_text().count("injecting EIO error")


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[FailingDisk]:
    backing = blank_volume(tmp_path, "backing", SIZE)
    mnt, trigger, log = tmp_path / "mnt", tmp_path / "trigger", tmp_path / "nbdfuse.log"
    mnt.mkdir()
    errors = [
        f"error-{op}{suffix}"
        for op in ("pwrite", "zero", "trim")
        for suffix in ("=EIO", "-rate=100%", f"-file={trigger}")
    ]
    pidfile = tmp_path / "nbdfuse.pid"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *("nbdfuse", "-P", str(pidfile), str(mnt / "vol"), "--command"),
                *("nbdkit", "-s", "file", str(backing), "--filter=error", *errors),
            ],
            stdout=out,
            stderr=out,
        )
    try:
        wait_until("nbdfuse to serve", lambda: pidfile.exists() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield FailingDisk(backing, mnt / "vol", trigger, log)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)  # nbdfuse exits when unmounted
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def qemu_io(uri: str, cmd: str) -> str:
    """qemu-io's output; it reports a failed request as "... failed: <error>" and exits 0 or 1."""
    res = subprocess.run(
        ["qemu-io", "-f", "raw", "-c", cmd, uri], capture_output=True, text=True, timeout=60
    )
    return res.stdout + res.stderr


def nbd_flush(uri: str) -> str:
    """'ok', or the errno name of an NBD FLUSH's error (libnbd's Python bindings)."""
    script = """
try:
    h.flush(); print("ok")
except nbd.Error as e:
    print(errno.errorcode.get(e.errno, e.errno))
"""
    res = subprocess.run(
        ["/usr/bin/python3", "-m", "nbd", "-u", uri, "-c", "import errno\n" + script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_the_fuse_file_fails_writes_with_eio_only_while_the_trigger_exists(
    failing_disk: FailingDisk,
) -> None:
    fd = os.open(failing_disk.path, os.O_RDWR)  # the tapper's flags: no O_DIRECT, no O_SYNC
    try:
        assert os.pwrite(fd, b"\x11" * 4096, 0) == 4096
        os.fdatasync(fd)
        failing_disk.trigger.touch()
        with pytest.raises(OSError) as exc:
            os.pwrite(fd, b"\x22" * 4096, 4096)
        assert exc.value.errno == errno.EIO  # at the pwrite itself: write-through, nothing cached
        failing_disk.trigger.unlink()
        assert os.pwrite(fd, b"\x33" * 4096, 8192) == 4096
        os.fdatasync(fd)
    finally:
        os.close(fd)
    data = failing_disk.backing.read_bytes()
    assert data[:4096] == b"\x11" * 4096
    assert data[4096:8192] == bytes(4096)  # the failed write never reached the disk
    assert data[8192:12288] == b"\x33" * 4096


def probe_errors(port: int) -> float:
    """The tapper's probes that met the failing disk (io_errors_total with op="probe")."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tapstream_tapper_io_errors_total{") and 'op="probe"' in line
    )


@pytest.mark.parametrize(
    ("mode", "failing"), [("sync", "write -P 0xb2"), ("async", "write -z")], ids=["sync", "async"]
)
def test_eio_fails_the_request_stops_writes_and_the_failed_region_is_resent(
    stack, tmp_path: Path, unique_name: str, failing_disk: FailingDisk, mode: str, failing: str
) -> None:
    group = unique_name
    metrics_port = free_port()
    tapper = start_tapper(
        stack,
        tmp_path,
        group,
        {"disk0": failing_disk.path},
        mode=mode,
        extra_env={"TAPSTREAM_METRICS_PORT": str(metrics_port)},
    )
    uri = tapper.uri("disk0")
    try:
        out = qemu_io(uri, f"write -P 0xa1 0 {K64}")
        assert "failed" not in out, out
        assert metric(metrics_port, "tapstream_tapper_volume_failed") == 0

        failing_disk.trigger.touch()
        out = qemu_io(uri, f"{failing} {2 * K64} {K64}")
        assert "write failed: Input/output error" in out, out
        assert metric(metrics_port, "tapstream_tapper_volume_failed") == 1
        assert metric(metrics_port, "tapstream_tapper_io_errors_total") >= 1
        # the volume refuses writes and flushes now, anywhere; reads go on
        out = qemu_io(uri, f"write -P 0xc3 {16 * K64} 4k")
        assert "write failed: Input/output error" in out, out
        assert nbd_flush(uri) == "EIO"  # qemu-io skips a flush with nothing written: libnbd
        out = qemu_io(uri, "read -P 0xa1 0 64k")
        assert "failed" not in out and "Pattern verification failed" not in out, out
        # Refused in the tapper: they never reached the disk. Only the first write and the probes
        # (every 2 s; a loaded machine may run one by now) met the failing disk; a probe that just
        # injected may not be counted yet, hence the short wait.
        wait_until(
            "injections = the first write + the probes",
            lambda: failing_disk.injected() - probe_errors(metrics_port) == 1,
            10,
        )
        # a probe meets the still failing disk: the volume stays failed
        wait_until("a probe of the failing disk", lambda: failing_disk.injected() >= 2, 15)
        assert metric(metrics_port, "tapstream_tapper_volume_failed") == 1
        assert "write failed" in qemu_io(uri, f"write -P 0xc3 {16 * K64} 4k")

        failing_disk.trigger.unlink()
        t0 = time.monotonic()
        wait_until(
            "writes to be taken again",
            lambda: "failed" not in qemu_io(uri, f"write -P 0xd4 {16 * K64} {K64}"),
            timeout=30,
            interval=0.5,
        )
        recovered_s = time.monotonic() - t0
        assert metric(metrics_port, "tapstream_tapper_volume_failed") == 0
        wait_until(
            "the delta sync to be acked",
            lambda: metric(metrics_port, "tapstream_tapper_dirty_bytes") == 0,
            timeout=30,
        )
    finally:
        assert tapper.stop(signal.SIGTERM) == 0
    log = tapper.log.read_text()
    assert "local I/O error on the protected volume" in log
    assert "the protected volume still fails" in log
    assert "the protected volume works again" in log

    # The stream resent the failed region as a DELTA sync ...
    settings = stack.settings
    topic = settings.topic(f"writes.{group}")
    records = [r for _p, _o, r in read_stream(client_config(settings), topic, make_codec(settings))]
    bodies = [r["body"] for r in records if r.get("volume") == "disk0"]
    deltas = [b["sync_id"] for kind, b in bodies if kind == "SyncStart" and b["kind"] == "DELTA"]
    assert len(deltas) == 1, [kind for kind, _ in bodies]
    resent = [
        (b["offset"], b["offset"] + len(b["data"]))
        for kind, b in bodies
        if kind == "SyncBlock" and b.get("sync_id") == deltas[0]
    ]
    assert any(a <= 2 * K64 and 3 * K64 <= b for a, b in resent), resent
    # ... and replays to exactly what the disk holds
    out = tmp_path / "replayed.img"
    replay(stack, group, "disk0", out, SIZE)
    images_equal(out, failing_disk.backing)
    data = failing_disk.backing.read_bytes()
    assert data[:K64] == b"\xa1" * K64
    assert data[2 * K64 : 3 * K64] == bytes(K64)  # the failed write: never on the disk
    assert data[16 * K64 : 17 * K64] == b"\xd4" * K64
    faults.record(
        {
            "scenario": f"protected-volume-eio-{mode}",
            "fault": "EIO from the protected volume (nbdkit error filter behind nbdfuse)",
            "load": f"qemu-io writes, {mode} mode",
            "acked": 2,
            "lost": 0,  # the replay equals the disk byte for byte
            "halted": 0,
            "recover_s": round(recovered_s, 2),
        }
    )

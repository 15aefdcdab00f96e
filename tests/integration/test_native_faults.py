"""Kafka frozen under plain sync writes that the compiled data path serves (native.py, lane.rs).

Four NBD connections (libnbd) write 4 KiB blocks, each block once with its own bytes, and log
every reply. The protected broker is frozen (SIGSTOP: it keeps its connections and answers
nothing, as behind a cut link) until a write failed and librdkafka gave up on the events in
flight, then thawed. Those writes must fail with EIO (the lane's watchdog or Kafka's refusal,
whichever comes first), the stream must recover by itself (a DELTA of the failed ranges), and
afterwards:
- every acknowledged block holds its bytes in the volume;
- the topic, replayed (gap-free) onto a blank disk, equals the volume byte for byte;
- the compiled path served writes both before the cut and after the recovery."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tapstream.core.ports import free_port

from .services_harness import metric, wait_until
from .tapper_harness import blank_volume, images_equal, native_writes, replay, start_tapper

pytestmark = pytest.mark.integration
BLOCK = 4096
SIZE = 64 * 1024 * 1024
CONNS = 4
TIMEOUT_S = 3  # the tapper's publish timeout: how long a write may wait for Kafka's ack
ENOUGH = 300  # acknowledged writes that show a phase (before the cut, after the recovery) ran

# Runs under the system Python, which has libnbd's bindings (python3-libnbd, as nbdsh uses).
# Connection k writes blocks k, k+CONNS, ... one at a time until stdin closes, and logs each
# reply as a JSON line [block, errno (0: acknowledged), monotonic start, monotonic end].
CLIENT = """
import json, sys, threading, time, nbd
uri, out_path, blocks, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stop, lock, out = threading.Event(), threading.Lock(), open(out_path, "w", buffering=1)

def writer(k):
    h = nbd.NBD()
    h.connect_uri(uri)
    for i in range(k, blocks, conns):
        if stop.is_set():
            break
        t0, err = time.monotonic(), 0
        try:
            h.pwrite((b"%08d" % i) * 512, i * 4096)
        except nbd.Error as e:
            err = e.errnum or -1
        with lock:
            out.write(json.dumps([i, err, t0, time.monotonic()]) + "\\n")
        if err and err != 5:
            return  # not an EIO: the connection is gone (the test fails on the errno)
    h.shutdown()

threads = [threading.Thread(target=writer, args=(k,)) for k in range(conns)]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
"""


class Reply(NamedTuple):
    block: int
    err: int
    start: float  # time.monotonic(): one clock for every process on the machine
    end: float


def replies(path: Path) -> list[Reply]:
    """The client's log so far (complete lines only)."""
    text = path.read_text() if path.exists() else ""
    return [Reply(*json.loads(line)) for line in text[: text.rfind("\n") + 1].splitlines()]


def payload(block: int) -> bytes:
    return (b"%08d" % block) * (BLOCK // 8)


def test_kafka_frozen_under_compiled_sync_writes_loses_no_ack(
    stack, local_stack, tmp_path: Path, unique_name: str
) -> None:
    vol = blank_volume(tmp_path, "disk0", SIZE)
    port = free_port()
    tapper = start_tapper(
        stack,
        tmp_path,
        unique_name,
        {"disk0": vol},
        extra_env={
            "TAPSTREAM_TAPPER_NATIVE": "on",
            "TAPSTREAM_TAPPER_PUBLISH_TIMEOUT_S": str(TIMEOUT_S),
            "TAPSTREAM_METRICS_PORT": str(port),
        },
    )
    broker = local_stack.kafka["protected"].pid()
    assert broker is not None
    log = tmp_path / "replies.jsonl"
    client = subprocess.Popen(
        ["/usr/bin/python3", "-c", CLIENT, tapper.uri("disk0"), str(log), str(SIZE // BLOCK),
         str(CONNS)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def acked_since(t: float) -> int:
        return sum(1 for r in replies(log) if not r.err and r.start >= t)

    frozen = False
    try:
        wait_until("writes acknowledged before the cut", lambda: acked_since(0) >= ENOUGH)
        before = replies(log)  # each ended before the cut
        cut = time.monotonic()
        os.kill(broker, signal.SIGSTOP)
        frozen = True
        # Frozen until a write failed and librdkafka gave up on an event in flight (its delivery
        # timeout; the compiled path reports the refusal, native.py logs it).
        wait_until(
            "a write failed and Kafka's refusal reported",
            lambda: (
                any(r.err and r.end > cut for r in replies(log))
                and '"kafka refused a write\'s event"' in tapper.log.read_text()
            ),
            timeout=TIMEOUT_S + 30,
        )
        os.kill(broker, signal.SIGCONT)
        frozen = False
        # Recovered: the stream is healthy again and its DELTA resend (of the failed ranges) done.
        wait_until(
            "the stream recovered",
            lambda: (
                metric(port, "tapstream_tapper_stream_healthy") == 1
                and '"stream recovered"' in tapper.log.read_text()
            ),
            timeout=60,
        )
        recovered = time.monotonic()
        counted = metric(port, "tapstream_tapper_publish_timeouts_total") + metric(
            port, "tapstream_tapper_publish_errors_total"
        )
        wait_until(
            "writes acknowledged after the recovery", lambda: acked_since(recovered) >= ENOUGH
        )
        _, err = client.communicate(timeout=60)  # stdin closed: the writers stop
        assert client.returncode == 0, err
    finally:
        if frozen:
            os.kill(broker, signal.SIGCONT)
        if client.poll() is None:
            client.kill()
        local_stack.up()  # the stack whole again for later tests (MirrorMaker 2 may need a restart)
        stopped = tapper.stop()
    assert stopped == 0, tapper.log.read_text()[-3000:]

    done = replies(log)
    assert len({r.block for r in done}) == len(done), "a block was written twice"
    failed = [r for r in done if r.err]
    # EIO only, and the fault hit the compiled path: writes sent in the cut's first second (the
    # lane healthy until the first deadline, TIMEOUT_S later, so they were its own) failed.
    assert {r.err for r in failed} == {errno.EIO}, failed
    assert any(cut - 1 < r.start < cut + 1 for r in failed), (cut, failed[:10])
    assert counted >= 1  # the tapper counted it (its watchdog's timeout or Kafka's refusal)
    # The compiled path served more writes than all those outside either phase: so some of the
    # writes before the cut, and some after the recovery, were its own.
    served = native_writes(tapper.log)["disk0"]
    after = [r for r in done if r.start >= recovered]
    assert served > len(done) - len(before), (served, len(done), len(before))
    assert served > len(done) - len(after), (served, len(done), len(after))
    # Every acknowledged block holds its bytes.
    data = vol.read_bytes()
    lost = [
        r.block
        for r in done
        if not r.err and data[r.block * BLOCK : (r.block + 1) * BLOCK] != payload(r.block)
    ]
    assert not lost, f"{len(lost)} acknowledged blocks lost, e.g. {lost[:10]}"
    # The stream, gap-free, rebuilds the volume exactly (the failed writes' ranges included). A
    # gap here: the recovery went on after later events while earlier ones never landed.
    replayed = replay(stack, unique_name, "disk0", tmp_path / "replayed.img", SIZE)
    assert replayed.events >= len(done) - len(failed)
    images_equal(vol, tmp_path / "replayed.img")

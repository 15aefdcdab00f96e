"""Async mode when Kafka falls behind (DRBD's congestion policy): past the backlog limit the volume
goes ahead (writes only mark the dirty bitmap), and once the backlog drained a catch-up resends the
marked regions as a DELTA sync. Then the topic replays onto a blank image equal to the volume, byte
for byte: no acknowledged write lost. On the Python path and on the compiled one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapstream.core.ports import free_port

from .services_harness import metric, wait_until
from .tapper_harness import blank_volume, images_equal, native_writes, replay, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 64 << 20


def caught_up(metrics_port: int) -> bool:
    return (
        metric(metrics_port, "tapstream_tapper_async_ahead") == 0
        and metric(metrics_port, "tapstream_tapper_rpo_seconds") == 0
    )


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_async_falls_behind_to_the_bitmap_catches_up_and_loses_nothing(
    stack, tmp_path: Path, unique_name: str, native: bool
) -> None:
    vol = blank_volume(tmp_path, "vol", SIZE)
    metrics_port = free_port()
    tapper = start_tapper(
        stack,
        tmp_path,
        unique_name,
        {"vol": vol},
        mode="async",
        extra_env={
            "TAPSTREAM_TAPPER_NATIVE": "on" if native else "off",
            # the smallest limit: 16 writes of 256 KiB in flight are more than Kafka has acked
            "TAPSTREAM_TAPPER_ASYNC_BACKLOG_BYTES": str(1 << 20),
            "TAPSTREAM_METRICS_PORT": str(metrics_port),
        },
    )
    try:
        for rw, bs in (("write", "256k"), ("randwrite", "4k")):
            run(
                [
                    "fio",
                    f"--name={rw}",
                    "--ioengine=nbd",
                    f"--uri={tapper.uri('vol')}",
                    f"--rw={rw}",
                    f"--bs={bs}",
                    "--size=48M",
                    "--io_size=24M",
                    "--iodepth=16",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--verify_fatal=1",
                    "--verify_state_save=0",
                    "--randrepeat=0",
                ]
            )
        wait_until("the async volume caught up", lambda: caught_up(metrics_port), timeout=120)
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-2000:]
    log = tapper.log.read_text()
    assert "kafka is behind" in log, "the volume never went ahead: the test proved nothing"
    assert "caught up with kafka" in log
    replica = tmp_path / "replayed.img"
    result = replay(stack, unique_name, "vol", replica, SIZE)
    images_equal(vol, replica)
    assert result.events > 0
    if native:  # the writes took the compiled path, ahead and not
        assert native_writes(tapper.log)["vol"] > 100

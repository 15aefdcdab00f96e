"""Fault tests on the shared two-site stack (DESIGN §9): parts of Kafka's side die mid-load and come
back; nothing acknowledged is missing and the recovery side converges byte-identical.

- MirrorMaker 2 SIGKILLed while fio writes (the link between the sites is down until it restarts):
  the protected side keeps acknowledging, MM2 resumes from its committed offsets (and may deliver
  some records twice); the mirrored stream and a restore from the journal come out byte-identical.
- The protected broker SIGKILLed under a sync-mode tapper: writes fail with EIO within the publish
  timeout instead of hanging, the operator sees why (log, metric), and once the broker is back the
  tapper repairs its stream so that replaying the topic equals the volume.

Each test restarts what it killed with the stack's own `up` (which waits until every part
answers), so the tests after it find the stack whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.ports import free_port
from tapstream.core.replay import replay_volume
from tapstream.journal.restore import RestoreError, restore
from tapstream.localstack import faults, processes
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import groups_env, metric, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, replay, start_tapper

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
SIZE = 32 * MIB


def records_on(conf: dict, topic: str) -> int:
    """How many records `topic` holds (0 while it does not exist yet)."""
    c = Consumer({**conf, "group.id": "tapstream-fault-test"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        total = 0
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def test_mirrormaker_sigkill_mid_load_loses_nothing(
    stack, local_stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    vol = blank_volume(tmp_path, "disk0", SIZE)
    settings = stack.settings.model_copy(update={"replica_dir": tmp_path / "replicas"})
    env = {"TAPSTREAM_REPLICA_DIR": str(tmp_path / "replicas")}
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    journal = start_service(
        stack, "tapstream.journal", tmp_path, {**env, **groups_env("JOURNAL", group)}, "journal"
    )
    vdsa_env = {
        **env,
        **groups_env("VDSA", group),
        "TAPSTREAM_SITE": "recovery",
        "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "120",  # the restore below reads the journal
    }
    vdsa = start_service(stack, "tapstream.vdsa", tmp_path, vdsa_env, "vdsa")
    recovery = client_config(settings, settings.recovery_bootstrap)
    mirrored = settings.mirrored(settings.topic(f"writes.{group}"))
    fio = subprocess.Popen(
        ["fio", "--name=w", "--ioengine=nbd", f"--uri={tapper.uri('disk0')}", "--rw=randwrite",
         "--bsrange=4k-64k", "--size=16M", "--time_based", "--runtime=8", "--rate=3m",
         "--iodepth=4", "--refill_buffers", "--randseed=77"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until("the load crossing to the recovery site", lambda: records_on(recovery, mirrored))
        mm2 = local_stack.mirrormaker.pid()
        assert mm2 is not None and fio.poll() is None, "the load ended before the fault"
        os.kill(mm2, signal.SIGKILL)
        # The sites are cut off from each other: the protected side must go on acknowledging.
        out, _ = fio.communicate(timeout=120)
        assert fio.returncode == 0, out
        crossed_while_down = records_on(recovery, mirrored)
        cp = asyncio.run(create_checkpoint(settings, group, "after-fault"))
        expected = shutil.copyfile(vol, tmp_path / "at-cp.img")
        local_stack.up()  # restarts MirrorMaker 2 and waits until both directions replicate
        assert local_stack.mirrormaker.pid() not in (None, mm2)
        wait_until(
            "the rest of the stream crossing after the restart",
            lambda: records_on(recovery, mirrored) > crossed_while_down,
        )
        # Every event once, in order (duplicates from MM2's at-least-once delivery are skipped by
        # seq; a gap raises), replayed from the recovery cluster, equals the protected volume.
        wait_until(
            "the mirrored stream holding the checkpoint",
            lambda: (
                r := replay_volume(recovery, mirrored, "disk0", str(tmp_path / "mirrored.img"),
                                   SIZE, make_codec(settings))
            ).checkpoints[-1:] == [cp] and r,
            timeout=60, interval=1,
        )  # fmt: skip
        images_equal(expected, tmp_path / "mirrored.img")
        # The journal indexed the redelivered records once: the restore is byte-identical...
        out_img = tmp_path / "restored.img"
        wait_until(
            "the checkpoint restorable",
            lambda: _restores(settings, group, cp, out_img),
            timeout=60,
            interval=1,
        )
        images_equal(expected, out_img)
        faults.record(
            {
                "scenario": "mirrormaker-sigkill",
                "fault": "MirrorMaker 2 SIGKILLed mid-load, restarted by make up",
                "load": "fio randwrite, sync mode",
                "lost": 0,  # the mirrored replay and the journal restore equal the volume
                "halted": 0,
            }
        )
    finally:
        if fio.poll() is None:
            fio.kill()
        local_stack.up()
        assert tapper.stop() == 0
        stop(journal)
        stop(vdsa)


def _restores(settings, group: str, cp: str, out: Path) -> bool:
    try:
        asyncio.run(restore(settings, group, "disk0", cp, out))
    except RestoreError as exc:
        if "no checkpoint" in str(exc) or "catching up" in str(exc):  # not indexed yet
            return False
        raise
    return True


def qemu_io(uri: str, cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "raw", "-c", cmd, uri], capture_output=True, text=True, timeout=timeout
    )


def test_protected_broker_sigkill_fails_sync_writes_with_eio_then_repairs(
    stack, local_stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    vol = blank_volume(tmp_path, "disk0", SIZE)
    metrics_port = free_port()
    tapper = start_tapper(
        stack,
        tmp_path,
        group,
        {"disk0": vol},
        extra_env={
            "TAPSTREAM_TAPPER_PUBLISH_TIMEOUT_S": "3",
            "TAPSTREAM_METRICS_PORT": str(metrics_port),
        },
    )
    uri = tapper.uri("disk0")
    broker = local_stack.kafka["protected"]
    try:
        acked = qemu_io(uri, "write -P 0x11 0 1M")
        assert acked.returncode == 0 and "error" not in acked.stdout.lower(), acked.stdout
        pid = broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # With the broker gone a sync write is never acknowledged: EIO, not a hang.
        lost = qemu_io(uri, "write -P 0x22 1M 1M")
        assert "Input/output error" in lost.stdout + lost.stderr, lost
        # Why, for the operator: the stream is marked unhealthy, the failure counted and logged
        # (librdkafka's delivery timeout or the tapper's watchdog, whichever fires first).
        assert metric(metrics_port, "tapstream_tapper_stream_healthy") == 0
        assert (
            metric(metrics_port, "tapstream_tapper_publish_timeouts_total")
            + metric(metrics_port, "tapstream_tapper_publish_errors_total")
            >= 1
        )
        logged = tapper.log.read_text()
        assert "kafka did not ack in time" in logged or "publishing failed" in logged, logged[
            -2000:
        ]
        local_stack.up()  # the broker restarts and recovers its log; MM2 reconnects
        # The tapper repairs its stream (resends what was refused) and writes succeed again.
        wait_until(
            "sync writes acknowledged again",
            lambda: qemu_io(uri, "write -P 0x33 2M 1M").stdout.count("wrote") == 1,
            timeout=120,
            interval=1,
        )
        assert tapper.stop() == 0
        # Nothing acknowledged is missing, and the stream (gap-free) replays to the volume exactly:
        # the EIO'd range is whatever the volume holds, resent by the repair.
        replayed = replay(stack, group, "disk0", tmp_path / "replayed.img", SIZE)
        assert replayed.last_seq > 0
        images_equal(vol, tmp_path / "replayed.img")
        data = (tmp_path / "replayed.img").read_bytes()
        assert data[:MIB] == b"\x11" * MIB and data[2 * MIB : 3 * MIB] == b"\x33" * MIB
        faults.record(
            {
                "scenario": "protected-broker-sigkill-rf1",
                "fault": "the only protected broker SIGKILLed under a sync tapper, restarted",
                "load": "qemu-io 1 MiB writes, sync mode",
                "acked": 2,  # the write during the outage got EIO: not acknowledged, not lost
                "lost": 0,
                "halted": 0,
            }
        )
    finally:
        if broker.pid() is None:
            local_stack.up()
        if tapper.proc.poll() is None:
            tapper.stop()


def test_up_restarts_a_mirrormaker_that_no_longer_replicates(local_stack) -> None:
    """A MirrorMaker 2 that runs but mirrors nothing (frozen here with SIGSTOP; after a cluster
    outage its Connect workers can give up the same way) is found by `up` and restarted."""
    frozen = local_stack.mirrormaker.pid()
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)
    try:
        local_stack.up()  # waits for heartbeats crossing both ways again
        now = local_stack.mirrormaker.pid()
        assert now is not None and now != frozen
        # Gone: exited (a zombie counts as gone: when the process that started it has exited,
        # it waits for PID 1 to reap it, and kill(pid, 0) still answers meanwhile; CI saw it).
        assert not processes.alive(frozen), f"the frozen MirrorMaker 2 ({frozen}) still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)

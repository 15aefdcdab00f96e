"""Kafka lost events it had acknowledged (retention passed, a lost broker disk, an unclean leader
election, a recreated topic). The tapper must not reuse their seqs (a consumer that applied them
would skip the new events as redeliveries: a silent hole) and must resend the whole volume; a
recovery replica that halted on the hole heals from that resend."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.replay import VolumeReplay, read_stream
from tapstream.core.replica import Replica
from tapstream.localstack import faults

from .services_harness import replica_equals, start_recovery_vdsa, stop, wait_until
from .tapper_harness import blank_volume, images_equal, qemu_write, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 8 * 1024 * 1024


def drop_all_records(conf: dict, topic: str) -> None:
    """What retention does: every record so far is gone (the log start moves to the end)."""
    admin = AdminClient(conf)
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    c = Consumer({**conf, "group.id": "test-drop"})
    try:
        ends = [
            TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            for p in meta.partitions
        ]
    finally:
        c.close()
    for fut in admin.delete_records(ends, request_timeout=30).values():
        fut.result(30)


def test_tapper_never_reuses_lost_seqs_and_resends_the_volume(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group, volume = unique_name, "disk0"
    settings = stack.settings
    codec = make_codec(settings)
    protected = client_config(settings)
    topic = settings.topic(f"writes.{group}")
    vol = blank_volume(tmp_path, volume, SIZE)
    tapper = start_tapper(stack, tmp_path, group, {volume: vol})
    for i in range(4):
        qemu_write(tapper.uri(volume), i << 20, 0x41 + i)
    # A consumer (a replica) applied everything so far ...
    applied_seq = max(r["seq"] for _p, _o, r in read_stream(protected, topic, codec))
    applied = tmp_path / "applied-before.img"
    shutil.copyfile(vol, applied)
    # ... but not what came next: a region zeroed (trim) and one more write, acked, then lost.
    run(["qemu-io", "-f", "raw", "-c", f"write -z {1 << 20} 65536", tapper.uri(volume)])
    qemu_write(tapper.uri(volume), 5 << 20, 0x45)
    assert tapper.stop() == 0
    acked = max(r["seq"] for _p, _o, r in read_stream(protected, topic, codec))
    assert acked > applied_seq

    drop_all_records(protected, topic)
    t0 = time.monotonic()
    tapper = start_tapper(stack, tmp_path, group, {volume: vol})
    try:
        # New writes after the restart, beside (not over) the lost zeroing.
        for i in (2, 3):
            qemu_write(tapper.uri(volume), (i << 20) + 4096, 0x61 + i)
    finally:
        assert tapper.stop() == 0
    records = [r for _p, _o, r in read_stream(protected, topic, codec) if r["volume"] == volume]
    first = records[0]
    assert first["seq"] == acked + 1, "a lost seq was reused"
    assert first["body"][0] == "SyncStart" and first["body"][1]["bytes_total"] == SIZE

    # The consumer that had applied up to `applied_seq` meets the hole and the resend right after
    # it, and converges: the lost zeroing included (a resend of non-zero blocks only would leave
    # the old data there, silently).
    fd = os.open(applied, os.O_RDWR)
    try:
        replay = VolumeReplay(fd, volume)
        replay.cursor.seq = applied_seq
        for r in records:
            replay.apply(r)
    finally:
        os.close(fd)
    assert vol.read_bytes()[1 << 20 : (1 << 20) + 65536] == bytes(65536)
    assert applied.read_bytes()[1 << 20 : (1 << 20) + 65536] == bytes(65536)
    images_equal(vol, applied)
    faults.record(
        {
            "scenario": "kafka-lost-acked-events",
            "fault": "Kafka lost acknowledged events (all records deleted) while the tapper was down",
            "load": "qemu-io 64 KiB writes, sync mode",
            "acked": 8,
            "lost": 0,  # images_equal above: the consumer holds every acknowledged write
            "halted": 0,
            "recover_s": round(time.monotonic() - t0, 2),
        }
    )


def test_recovery_replica_halts_on_a_retention_hole_and_heals(
    stack, tmp_path: Path, unique_name: str
) -> None:
    """Events retention removed from the mirrored topic before the VDSA read them: the VDSA halts
    the volume on the gap, asks for a resync, and the replica ends byte-identical."""
    group, volume = unique_name, "disk0"
    settings = stack.settings
    codec = make_codec(settings)
    recovery = client_config(settings, settings.recovery_bootstrap)
    mirrored = settings.mirrored(settings.topic(f"writes.{group}"))
    vol = blank_volume(tmp_path, volume, SIZE)
    tapper = start_tapper(stack, tmp_path, group, {volume: vol})
    replicas = tmp_path / "replicas"
    replica = Replica(replicas, group, volume)
    vdsa = None
    try:
        for i in range(3):
            qemu_write(tapper.uri(volume), i << 20, 0x50 + i)

        def mirrored_seqs() -> list[int]:
            return [r["seq"] for _p, _o, r in read_stream(recovery, mirrored, codec)]

        wait_until("the writes mirrored", lambda: len(mirrored_seqs()) >= 3, timeout=90)
        drop_all_records(recovery, mirrored)
        qemu_write(tapper.uri(volume), 3 << 20, 0x5A)
        wait_until("the next write mirrored", lambda: len(mirrored_seqs()) >= 1, timeout=90)
        vdsa = start_recovery_vdsa(stack, tmp_path, [group], replicas)

        def healed() -> bool:
            return replica.position().halt is None and replica_equals(replica.image, vol)

        t0 = time.monotonic()
        # The halt may be short (the resync of a small volume is quick): watch closely, and take
        # its reason from the CRITICAL halt Alert, which stays.
        seen = wait_until(
            "the volume halted on the hole (or already healed)",
            lambda: replica.position().halt or healed(),
            interval=0.05,
        )
        assert seen is True or (isinstance(seen, dict) and seen["reason"] == "gap"), seen
        wait_until("the replica healed by the resync", healed, timeout=90, interval=0.5)

        def halt_alerts() -> list[tuple[str, str]]:
            return [
                (r["volume"], r["details"]["reason"])
                for _p, _o, r in read_stream(recovery, settings.topic("alerts"), codec)
                if r["group"] == group and r["kind"] == "halt"
            ]

        assert wait_until("the halt alert", halt_alerts, timeout=30) == [(volume, "gap")]
        assert vdsa.poll() is None
        faults.record(
            {
                "scenario": "retention-hole",
                "fault": "retention removed mirrored events before the recovery VDSA read them",
                "load": "qemu-io 64 KiB writes, sync mode",
                "acked": 4,
                "lost": 0,  # healed(): the replica equals the protected volume
                "halted": 1,
                "recover_s": round(time.monotonic() - t0, 2),
            }
        )
    finally:
        if vdsa is not None:
            stop(vdsa)
        tapper.stop()

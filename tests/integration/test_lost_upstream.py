"""Kafka lost events it had acknowledged (retention passed, a lost broker disk, an unclean leader
election, a recreated topic). The tapper must not reuse their seqs (a consumer that applied them
would skip the new events as redeliveries: a silent hole) and must resend the whole volume; a
recovery replica that halted on the hole heals from that resend."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.replay import VolumeReplay, read_stream
from tapstream.core.replica import Replica

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 8 * 1024 * 1024


def qemu_write(uri: str, offset: int, pattern: int, length: int = 65536) -> None:
    run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} {offset} {length}", uri])


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
    assert tapper.stop() == 0
    acked = max(r["seq"] for _p, _o, r in read_stream(protected, topic, codec))
    applied = tmp_path / "applied-before.img"
    shutil.copyfile(vol, applied)  # a consumer that applied every acknowledged event

    drop_all_records(protected, topic)
    tapper = start_tapper(stack, tmp_path, group, {volume: vol})
    try:
        for i in range(2):
            qemu_write(tapper.uri(volume), (i << 20) + 4096, 0x61 + i)
    finally:
        assert tapper.stop() == 0
    records = [r for _p, _o, r in read_stream(protected, topic, codec) if r["volume"] == volume]
    first = records[0]
    assert first["seq"] == acked + 1, "a lost seq was reused"
    assert first["body"][0] == "SyncStart" and first["body"][1]["bytes_total"] == SIZE

    # The consumer that had applied up to `acked` converges on the resend.
    fd = os.open(applied, os.O_RDWR)
    try:
        replay = VolumeReplay(fd, volume)
        replay.cursor.seq = acked
        for r in records:
            replay.apply(r)
    finally:
        os.close(fd)
    images_equal(vol, applied)


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
        vdsa = start_service(
            stack,
            "tapstream.vdsa",
            tmp_path,
            {
                **groups_env("VDSA", group),
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_REPLICA_DIR": str(replicas),
                "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "0",
                "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
            },
            "vdsa",
        )

        def healed() -> bool:
            pos = replica.position()
            if pos.halt is not None or not replica.image.exists():
                return False
            got = replica.image.read_bytes()
            return got + bytes(SIZE - len(got)) == vol.read_bytes()

        halt = wait_until("the volume halted on the hole", lambda: replica.position().halt)
        assert isinstance(halt, dict) and halt["reason"] == "gap", halt
        wait_until("the replica healed by the resync", healed, timeout=90, interval=0.5)
        assert vdsa.poll() is None
    finally:
        if vdsa is not None:
            stop(vdsa)
        tapper.stop()

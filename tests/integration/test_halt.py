"""Halt, never skip (DESIGN §6): the recovery VDSA stops a volume at its last good event on a lost
event, a bad checksum or an undecodable record, says so (gauge, alert, Progress), asks the tapper
for a resync of the whole volume, and converges byte-identical once that sync arrives. Poison that
belongs to no volume goes to tapstream.dlq and the VDSA keeps applying."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.ports import free_port
from tapstream.core.replay import read_stream
from tapstream.core.replica import Replica
from tapstream.localstack import faults

from .services_harness import replica_equals, start_recovery_vdsa, stop, wait_until
from .tapper_harness import blank_volume, qemu_write, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 8 * 1024 * 1024


def raw_records(conf: dict[str, Any], topic: str) -> list[Any]:
    """Every record of `topic` as confluent_kafka Messages (no decoding: poison included)."""
    c = Consumer({**conf, "group.id": "test-raw", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        out = []
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, low)])
            while True:
                msg = c.poll(10)
                assert msg is not None, f"no record from {topic}[{p}]"
                if msg.error():
                    continue
                out.append(msg)
                if msg.offset() + 1 >= high:
                    break
        return out
    finally:
        c.close()


def gauge(port: int, group: str, volume: str, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    want = f'tapstream_volume_halted{{group="{group}",reason="{reason}",volume="{volume}"}}'
    for line in text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return -1.0


def test_lost_corrupt_and_undecodable_events_halt_then_resync_heals(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group, volume = unique_name, "disk0"
    settings = stack.settings
    codec = make_codec(settings)
    recovery = client_config(settings, settings.recovery_bootstrap)
    mirrored = settings.mirrored(settings.topic(f"writes.{group}"))
    vol = blank_volume(tmp_path, volume, SIZE)
    replicas = tmp_path / "replicas"
    replica = Replica(replicas, group, volume)
    port = free_port()
    tapper = start_tapper(stack, tmp_path, group, {volume: vol})
    # The operator heals by hand here (auto-resync: test_lost_upstream), so the halted state can
    # be looked at before it heals.
    vdsa = start_recovery_vdsa(
        stack,
        tmp_path,
        [group],
        replicas,
        {"TAPSTREAM_METRICS_PORT": str(port), "TAPSTREAM_VDSA_AUTO_RESYNC": "false"},
    )
    producer = Producer(recovery)

    def mirrored_last() -> tuple[int, int]:
        """(partition, last seq) of the volume's events in the mirrored topic (poison skipped)."""
        last = (0, 0)
        for m in raw_records(recovery, mirrored):
            try:
                _, rec = codec.decode(m.value())
            except Exception:
                continue  # what this test injected
            if rec.get("volume") == volume:
                last = (m.partition(), max(last[1], rec["seq"]))
        return last

    def converged() -> bool:
        return replica.position().halt is None and replica_equals(replica.image, vol)

    def inject(value: bytes | None, key: bytes | None, partition: int) -> int:
        """Produce straight into the mirrored topic; returns the record's offset."""
        offsets: list[int] = []
        producer.produce(
            mirrored,
            value=value,
            key=key,
            partition=partition,
            on_delivery=lambda err, msg: offsets.append(-1 if err else msg.offset()),
        )
        assert producer.flush(10) == 0 and offsets and offsets[0] >= 0
        return offsets[0]

    written: list[int] = []  # offsets of the 64 KiB writes the tapper acknowledged

    def lost_writes(offsets: list[int]) -> int:
        """Acknowledged writes whose bytes the replica does not hold."""
        got, want = replica.image.read_bytes(), vol.read_bytes()
        got += bytes(SIZE - len(got))
        return sum(got[o : o + 65536] != want[o : o + 65536] for o in offsets)

    writes = 0
    try:
        offset = 0
        for reason in ("gap", "checksum", "undecodable"):
            offset += 1 << 20
            qemu_write(tapper.uri(volume), offset, 0x30 + offset // (1 << 20))
            written += [offset, offset + 65536]
            wait_until("the write mirrored", lambda: mirrored_last()[1] > 0, timeout=60)
            wait_until("the replica caught up", converged, timeout=60)
            partition, seq = mirrored_last()
            data = b"\x55" * 4096
            bad = {
                # seq + 2: event seq + 1 never arrived
                "gap": codec.encode_write(volume, seq + 2, 1, "h", group, 0, data),
                "checksum": codec.encode_write(volume, seq + 1, 1, "h", group, 0, data, 12345),
                "undecodable": b"\xc3\x01not avro at all",
            }[reason]
            inject(bad, volume.encode(), partition)
            halt = wait_until(
                f"the volume halted ({reason})", lambda: replica.position().halt, timeout=60
            )
            assert isinstance(halt, dict) and halt["reason"] == reason, halt
            assert gauge(port, group, volume, reason) == 1.0
            assert replica.position().seq == seq, "the replica moved past its last good event"
            assert b"\x55" * 4096 not in replica.image.read_bytes()[:8192]
            # Writes while halted are not applied out of order; the resync brings them and heals.
            qemu_write(tapper.uri(volume), offset + 65536, 0x70)
            assert replica.position().seq == seq and replica.position().halt == halt
            t0 = time.monotonic()
            run(
                [sys.executable, "-m", "tapstream.cli.main", "volume", "resync", group, volume],
                env=stack.env,
            )
            wait_until(f"the replica healed after {reason}", converged, timeout=90, interval=0.5)
            assert gauge(port, group, volume, reason) == 0.0
            assert vdsa.poll() is None, "the VDSA died"
            writes += 2
            faults.record(
                {
                    "scenario": f"replica-{reason}",
                    "fault": {
                        "gap": "an event lost between the sites (seq gap)",
                        "checksum": "an event corrupted (bad CRC-32C)",
                        "undecodable": "an undecodable record of the volume",
                    }[reason],
                    "load": "qemu-io 64 KiB writes, sync mode",
                    "acked": writes,
                    "lost": lost_writes(written),
                    "halted": 1,
                    "recover_s": round(time.monotonic() - t0, 2),
                }
            )

        alerts = [
            rec
            for _p, _o, rec in read_stream(recovery, settings.topic("alerts"), codec)
            if rec["group"] == group and rec["kind"] == "halt"
        ]
        assert sorted(a["details"]["reason"] for a in alerts) == [
            "checksum",
            "gap",
            "undecodable",
        ]
        protected = client_config(settings, settings.protected_bootstrap)
        resyncs = [
            rec
            for _p, _o, rec in read_stream(protected, settings.topic("control"), codec)
            if rec["group"] == group and rec["kind"] == "RESYNC"
        ]
        assert len(resyncs) == 3 and all(r["args"][volume] == "all" for r in resyncs)
        assert {r["sender"] for r in resyncs} == {"tapstream-cli"}

        # Poison that names no volume: set aside, counted, and the volume keeps applying.
        partition, seq = mirrored_last()
        starts = [
            inject(value, key, partition)
            for value, key in (
                (None, b"not a volume/../x"),
                (b"garbage", None),
                (codec.encode("Progress", _progress(group)), volume.encode()),
            )
        ]
        qemu_write(tapper.uri(volume), 5 << 20, 0x7A)
        wait_until("the replica applied past the poison", converged, timeout=60)
        letters = [
            m
            for m in raw_records(recovery, settings.topic("dlq"))
            if dict(m.headers() or [])["tapstream.dlq.topic"] == mirrored.encode()
        ]
        by_offset = {int(dict(m.headers())["tapstream.dlq.offset"]): m for m in letters}
        reasons = {
            o: dict(by_offset[o].headers())["tapstream.dlq.reason"].decode()
            for o in starts
            if o in by_offset
        }
        assert sorted(reasons.values()) == ["foreign", "tombstone", "undecodable"], reasons
        assert vdsa.poll() is None, "the VDSA died"
    finally:
        stop(vdsa)
        tapper.stop()


def _progress(group: str) -> dict[str, Any]:
    return {
        "group": group,
        "volume": "disk0",
        "site": "recovery",
        "source": "test",
        "applied_seq": 0,
        "applied_ts": 0,
        "applied_offset": 0,
        "newest_seq_seen": 0,
        "rpo_seconds": 0.0,
        "lag_records": 0,
        "ts": 0,
        "halted": None,
    }

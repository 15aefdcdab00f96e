"""Poison records in live topics: a tombstone, random bytes, a record of another type and a DiskEvent
of another group. The consumer stays up, goes on past them, and each one lands on tapstream.dlq with
its source topic, partition and offset in the headers (DESIGN §6: no consumer crash-loops on one)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tapstream.analyzer import published
from tapstream.core.codec import Codec, make_codec
from tapstream.core.kafka import client_config, producer_config
from tapstream.core.keep import tag_command
from tapstream.core.ports import free_port
from tapstream.journal.store import JournalStore
from tapstream.localstack import faults
from tapstream.site_manager.domain import Recorded
from tapstream.site_manager.domain import events as e
from tapstream.site_manager.event_log import EventLog, Read

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, run, start_tapper

pytestmark = pytest.mark.integration
TS = 1_764_000_000_000_000


def poison(codec: Codec, group: str) -> dict[str, tuple[bytes, bytes | None]]:
    """(key, value) of one record of each kind, by the reason the consumer should give."""
    disk_event = {
        "volume": "disk0",
        "seq": 1,
        "ts": TS,
        "host": "h",
        "body": ("Flush", {"fua": False}),
    }
    return {
        "tombstone": (b"disk0", None),
        "undecodable": (b"disk0", b"\xde\xad" + os.urandom(62)),
        "foreign": (
            b"disk0",
            codec.encode("Command", tag_command(group, "cp", "t", True, "x", TS)),
        ),
        "invalid": (b"disk0", codec.encode("DiskEvent", {**disk_event, "group": f"{group}-other"})),
    }


def produce(conf: dict[str, Any], topic: str, partition: int, records: dict) -> dict[str, int]:
    """Produce `records` in order to one partition; the offset each got, by name."""
    offsets: dict[str, int] = {}
    p = Producer(conf)
    for name, (key, value) in records.items():

        def delivered(err: Any, msg: Any, name: str = name) -> None:
            assert err is None, err
            offsets[name] = msg.offset()

        p.produce(topic, value, key=key, partition=partition, on_delivery=delivered)
        p.flush(30)  # one at a time: offsets in the order given
    assert len(offsets) == len(records)
    return offsets


def dead_letters(conf: dict[str, Any], dlq: str, source: str) -> list[dict[str, Any]]:
    """Every record on `dlq` that came from `source`: its headers (decoded), key and value."""
    c = Consumer({**conf, "group.id": f"dlq-probe-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        meta = c.list_topics(dlq, timeout=10).topics.get(dlq)
        if meta is None or meta.error is not None:
            return []
        ends = {
            p: c.get_watermark_offsets(TopicPartition(dlq, p), timeout=10)[1]
            for p in meta.partitions
        }
        c.assign([TopicPartition(dlq, p, OFFSET_BEGINNING) for p in ends])
        done = {p for p, end in ends.items() if end == 0}
        found = []
        while len(done) < len(ends):
            msg = c.poll(10)
            assert msg is not None, f"{dlq} not read to its end"
            if msg.error():
                continue
            if msg.offset() >= ends[msg.partition()] - 1:
                done.add(msg.partition())
            h = {k: v.decode() for k, v in msg.headers() or []}
            if h.get("tapstream.dlq.topic") == source:
                found.append({**h, "key": msg.key(), "value": msg.value()})
        return found
    finally:
        c.close()


def indexed(stack, group: str) -> list[tuple[int, str, int, int]]:
    """(seq, topic, partition, offset) of the journal's rows of disk0."""

    async def q() -> list[tuple[int, str, int, int]]:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            assert store.pool
            rows = await store.pool.fetch(
                "select seq, topic, kpartition, koffset from journal_events "
                "where group_name=$1 and volume='disk0' order by seq",
                group,
            )
            return [tuple(r) for r in rows]
        finally:
            await store.stop()

    return asyncio.run(q())


def test_the_journal_sets_poison_aside_and_goes_on(stack, tmp_path: Path, unique_name: str) -> None:
    group, settings = unique_name, stack.settings
    codec = make_codec(settings)
    vol = blank_volume(tmp_path, "disk0", 4 << 20)
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    journal = start_service(
        stack, "tapstream.journal", tmp_path, groups_env("JOURNAL", group), "journal"
    )
    try:
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", tapper.uri("disk0")])
        before = wait_until("the first writes indexed", lambda: indexed(stack, group))
        assert isinstance(before, list)
        _, topic, partition, _ = before[-1]
        assert topic == settings.mirrored(settings.topic(f"writes.{group}"))
        # Straight into the mirrored topic the journal reads, between the tapper's events.
        recovery = settings.recovery_bootstrap
        records = poison(codec, group)
        offsets = produce(producer_config(settings, recovery), topic, partition, records)
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 64k", tapper.uri("disk0")])

        def past_the_poison() -> list[tuple[int, str, int, int]]:
            assert journal.poll() is None, (tmp_path / "journal.log").read_text()[-3000:]
            rows = indexed(stack, group)
            return rows if any(r[3] > max(offsets.values()) for r in rows) else []

        after = wait_until("the later writes indexed", past_the_poison)
        assert isinstance(after, list) and len(after) > len(before)
        # The poison took no row and no seq: the tapper's stream is indexed whole.
        assert [r[0] for r in after] == list(range(1, len(after) + 1))
        assert not {r[3] for r in after} & set(offsets.values())

        def four() -> list[dict[str, Any]]:
            got = dead_letters(client_config(settings, recovery), settings.topic("dlq"), topic)
            return got if len(got) >= 4 else []

        letters = wait_until("four dead letters", four, timeout=30)
        assert isinstance(letters, list)
        by_reason = {d["tapstream.dlq.reason"]: d for d in letters}
        assert len(letters) == 4 and set(by_reason) == set(offsets)
        for reason, offset in offsets.items():
            d = by_reason[reason]
            assert d["tapstream.dlq.partition"] == str(partition)
            assert d["tapstream.dlq.offset"] == str(offset)
            assert d["tapstream.dlq.service"] == "journal" and d["tapstream.dlq.error"]
            assert d["key"] == b"disk0"
        for reason in ("undecodable", "foreign", "invalid"):  # the original bytes
            assert by_reason[reason]["value"] == records[reason][1]
        faults.record(
            {
                "scenario": "poison-records",
                "fault": "tombstone, garbage, a Command and another group's event in a write topic",
                "load": "qemu-io writes; the journal indexing",
                "lost": 0,  # every event indexed, seq 1..N without a gap
                "halted": 0,
                "dead_letters": len(letters),
            }
        )
    finally:
        assert tapper.stop() == 0
        assert stop(journal) == 0


def test_the_analyzer_sets_poison_aside_and_goes_on(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group, settings = unique_name, stack.settings
    topic = settings.topic(f"writes.{group}")
    consumer_group = f"{settings.topic_prefix}-analyzer.encryption.{group}"
    tapper = start_tapper(
        stack, tmp_path, group, {"disk0": blank_volume(tmp_path, "disk0", 4 << 20)}
    )
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", tapper.uri("disk0")])  # the topic
    port = free_port()
    env = {
        "TAPSTREAM_ANALYZER_GROUP": group,
        "TAPSTREAM_LOG_FORMAT": "console",
        "TAPSTREAM_METRICS_PORT": str(port),
    }
    analyzer = start_service(stack, "tapstream.analyzer", tmp_path, env, "analyzer")
    protected = client_config(settings, settings.protected_bootstrap)
    seq_label = {"analyzer": "encryption", "group": group, "volume": "disk0"}

    def caught_up() -> bool:
        assert analyzer.poll() is None, (tmp_path / "analyzer.log").read_text()[-3000:]
        return published.committed_lag(settings, consumer_group, topic) == 0

    try:
        wait_until("the analyzer caught up", caught_up, timeout=120)
        seq_before = metric(port, "tapstream_analyzer_seq", seq_label)
        (partition,) = [p for p, n in records_per_partition(protected, topic).items() if n]
        records = poison(make_codec(settings), group)
        offsets = produce(
            producer_config(settings, settings.protected_bootstrap), topic, partition, records
        )
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 64k", tapper.uri("disk0")])
        wait_until("the analyzer past the poison and the later writes", caught_up, timeout=60)
        # It analyzed the later writes, in the same agent: a crashed agent is restarted by faust
        # and would also get past the poison, so the log must not show one.
        assert metric(port, "tapstream_analyzer_seq", seq_label) > seq_before
        assert "Crashed" not in (tmp_path / "analyzer.log").read_text()
        for reason in records:
            labels = {"service": "analyzer.encryption", "topic": topic, "reason": reason}
            assert metric(port, "tapstream_dead_letters_total", labels) == 1
        letters = dead_letters(protected, settings.topic("dlq"), topic)
        got = {d["tapstream.dlq.reason"]: int(d["tapstream.dlq.offset"]) for d in letters}
        assert len(letters) == 4 and got == offsets
        assert {d["tapstream.dlq.service"] for d in letters} == {"analyzer.encryption"}
    finally:
        assert stop(analyzer) == 0
        assert tapper.stop() == 0


def metric(port: int, name: str, labels: dict[str, str]) -> float:
    """One sample of a service's /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def records_per_partition(conf: dict[str, Any], topic: str) -> dict[int, int]:
    c = Consumer({**conf, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        marks = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in meta.partitions
        }
        return {p: high - low for p, (low, high) in marks.items()}
    finally:
        c.close()


async def test_the_event_store_sets_poison_aside_and_goes_on(stack, unique_name: str) -> None:
    settings = stack.settings.model_copy(
        update={"topic_prefix": f"tapstream.{unique_name}", "site": "recovery"}
    )
    log = EventLog(settings)
    reads: list[Read] = []
    good_read = asyncio.Event()

    async def handler(batch: list[Read]) -> None:
        reads.extend(batch)
        if any(r.record is not None for r in batch):
            good_read.set()

    await log.start()
    log.follow({}, handler)
    try:
        await log.wait_caught_up(within_s=60)
        good = Recorded("ev-1", "group", "g1", 1, 1, "recovery", e.GroupCreated("g1"))
        unknown = {**good.to_record(), "type": "NoSuchEvent"}  # from a newer site manager, say
        records = {
            "tombstone": (b"g1", None),
            "undecodable": (b"g1", os.urandom(40)),
            "foreign": (
                b"g1",
                log.codec.encode("Command", tag_command("g1", "c", "t", True, "x", TS)),
            ),
            "invalid": (b"g1", log.codec.encode("DomainEvent", unknown)),
            "good": (b"g1", log.codec.encode("DomainEvent", good.to_record())),
        }
        offsets = produce(producer_config(settings), log.local, 0, records)
        await asyncio.wait_for(good_read.wait(), 30)
        assert [(r.offset, r.record is None) for r in reads] == [
            (offsets[name], name != "good") for name in records
        ]
        # The copies were acknowledged before the batch was handed on.
        letters = await asyncio.to_thread(
            dead_letters, client_config(settings), settings.topic("dlq"), log.local
        )
        got = {d["tapstream.dlq.reason"]: int(d["tapstream.dlq.offset"]) for d in letters}
        assert len(letters) == 4 and got == {k: v for k, v in offsets.items() if k != "good"}
        assert {d["tapstream.dlq.service"] for d in letters} == {"site-manager"}
    finally:
        await log.stop()

"""The foundation: records cross from the protected to the recovery cluster through the real
MirrorMaker 2, tapstream.events crosses both ways without looping, both Postgres answer, Kafka's own
tools and kcat work against both sites, and `make up` reuses what runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def require_tool(name: str) -> str:
    """The path of a tool the test drives; fails (never skips) when it is missing."""
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make system-deps` (deploy/local/install-system-deps.sh)"
    return path


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, 1, 1)]).values():
        try:
            fut.result(30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def produce(bootstrap: str, topic: str, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    p.produce(topic, value, key=b"agg")
    assert p.flush(30) == 0


def consume_until(
    bootstrap: str, topic: str, want: set[bytes], timeout_s: float = 60
) -> list[bytes]:
    """Read `topic` from the beginning until every value in `want` was seen (or the deadline)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "topic.metadata.refresh.interval.ms": 500})  # fmt: skip
    c.subscribe([topic])
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want <= set(seen):
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value() or b"")
    finally:
        c.close()
    return seen


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of `topic` up to its current end."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        todo = {p: (lo, hi) for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, lo) for p, (lo, _) in todo.items()])
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append(msg.value() or b"")
            part, offset = msg.partition() or 0, msg.offset() or 0
            if offset >= todo[part][1] - 1:
                del todo[part]
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        c.close()


def topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_kcat_lists_brokers_on_both_sites(stack) -> None:
    kcat = require_tool("kcat")
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        out = subprocess.run(
            [kcat, "-b", bootstrap, "-L"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert "1 brokers" in out.stdout and f"at {bootstrap}" in out.stdout


@pytest.mark.parametrize("suffix", ["", "unique"])
def test_smoke_record_crosses_to_recovery_under_mirrored_name(stack, unique_name, suffix) -> None:
    kcat = require_tool("kcat")
    topic = "tapstream.smoke" + (f".{unique_name}" if suffix else "")
    create_topic(stack.protected_bootstrap, topic)
    value = f"smoke {unique_name}"
    subprocess.run([kcat, "-b", stack.protected_bootstrap, "-P", "-t", topic, "-k", "k"],
                   input=value, text=True, check=True, timeout=30)  # fmt: skip
    mirrored = stack.settings.mirrored(topic)
    assert mirrored == f"protected.{topic}"
    seen = consume_until(stack.recovery_bootstrap, mirrored, {value.encode()})
    assert value.encode() in seen
    # and kcat reads it there too, as an operator would
    out = subprocess.run([kcat, "-b", stack.recovery_bootstrap, "-C", "-t", mirrored, "-e", "-q"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert value in out.stdout


def test_only_topics_with_our_prefix_are_mirrored(stack, unique_name) -> None:
    # `tapstream\..*` must reach MirrorMaker 2 with its backslash: `tapstream..*` would take these.
    outside = f"tapstream-{unique_name}.x"
    inside = f"tapstream.smoke.{unique_name}"
    for topic in (outside, inside):
        create_topic(stack.protected_bootstrap, topic)
        produce(stack.protected_bootstrap, topic, topic.encode())
    # Both topics existed at the refresh that picked up `inside`, so `outside` had its chance.
    assert inside.encode() in consume_until(
        stack.recovery_bootstrap, f"protected.{inside}", {inside.encode()}
    )
    assert f"protected.{outside}" not in topics(stack.recovery_bootstrap)


def test_events_cross_both_ways_without_looping(stack, unique_name) -> None:
    topic = "tapstream.events"
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        create_topic(bootstrap, topic)
    from_p = f"from-protected {unique_name}".encode()
    from_r = f"from-recovery {unique_name}".encode()
    produce(stack.protected_bootstrap, topic, from_p)
    produce(stack.recovery_bootstrap, topic, from_r)
    assert from_p in consume_until(stack.recovery_bootstrap, "protected.tapstream.events", {from_p})
    assert from_r in consume_until(stack.protected_bootstrap, "recovery.tapstream.events", {from_r})
    # Give MirrorMaker 2 a chance to loop: a topic created after both crossed is mirrored only by
    # a later topic refresh, which would also have picked up any looped events topic.
    barrier = f"tapstream.smoke.{unique_name}-barrier"
    create_topic(stack.protected_bootstrap, barrier)
    produce(stack.protected_bootstrap, barrier, b"barrier")
    assert b"barrier" in consume_until(
        stack.recovery_bootstrap, f"protected.{barrier}", {b"barrier"}
    )
    produce(stack.recovery_bootstrap, topic, b"barrier " + from_r)
    assert b"barrier " + from_r in consume_until(
        stack.protected_bootstrap, "recovery.tapstream.events", {b"barrier " + from_r}
    )
    # No loop: nothing comes back under a double prefix, and each record is on each cluster once.
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        names = topics(bootstrap)
        assert not any(n.startswith(("protected.recovery.", "recovery.protected.")) for n in names)
        events_topics = sorted(n for n in names if n.endswith("tapstream.events"))
        assert len(events_topics) == 2, events_topics  # the local one and the mirrored one
        records = [r for t in events_topics for r in read_all(bootstrap, t)]
        assert records.count(from_p) == 1 and records.count(from_r) == 1, (bootstrap, events_topics)


async def test_postgres_answers_on_both_sites(stack) -> None:
    for url in (stack.protected_database_url, stack.recovery_database_url):
        conn = await asyncpg.connect(url, timeout=10)
        try:
            assert await conn.fetchval("select 40 + 2") == 42
            assert int((await conn.fetchval("show server_version")).split(".")[0]) >= 14
        finally:
            await conn.close()


def test_kafka_cli_tools_run_against_either_site(stack, local_stack) -> None:
    # MirrorMaker 2 made `protected.heartbeats` on recovery and `recovery.heartbeats` on protected.
    for site, mirrored in (
        ("recovery", "protected.heartbeats"),
        ("protected", "recovery.heartbeats"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "tapstream.localstack", "tool", "--site", site, "--",
             "kafka-topics.sh", "--list"],
            capture_output=True, text=True, timeout=120, env=stack.env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert mirrored in out.stdout.split()


def test_up_again_reuses_every_running_process(stack, local_stack) -> None:
    before = {c.name: c.pid for c in local_stack.status()}
    assert all(before.values()), before
    local_stack.up()
    assert {c.name: c.pid for c in local_stack.status()} == before
    status = subprocess.run(
        [sys.executable, "-m", "tapstream.localstack", "status", "--json"],
        capture_output=True, text=True, timeout=60, env=stack.env, check=True,
    )  # fmt: skip
    rows = json.loads(status.stdout)
    assert {r["name"] for r in rows} == set(before)
    assert all(r["up"] and r["rss_kib"] > 0 for r in rows)
    for r in rows:
        assert r["log"].endswith(".log")
    assert (local_stack.root / "local.env").read_text().count("TAPSTREAM_") >= 5

"""The foundation: records cross from the protected to the recovery cluster through the real
MirrorMaker 2, tapstream.events crosses both ways without looping, both Postgres answer. kcat (the
tool operators use) does the producing and consuming where it can."""

from __future__ import annotations

import shutil
import subprocess
import time

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration
KCAT = shutil.which("kcat")


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, 1, 1)])
    for fut in futures.values():
        try:
            fut.result(30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def consume_until(bootstrap: str, topic: str, want: set[bytes], timeout_s: float = 60) -> list[bytes]:
    """Read `topic` from the beginning until every value in `want` was seen (or the deadline)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "topic.metadata.refresh.interval.ms": 500})
    c.subscribe([topic])
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want <= set(seen):
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
    finally:
        c.close()
    return seen


def topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_kcat_lists_brokers_on_both_sites(stack) -> None:
    assert KCAT, "kcat is missing: run `make system-deps` (Debian package kcat)"
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        out = subprocess.run([KCAT, "-b", bootstrap, "-L"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "1 brokers" in out.stdout


@pytest.mark.parametrize("suffix", ["", "unique"])
def test_smoke_record_crosses_to_recovery_under_mirrored_name(stack, unique_name, suffix) -> None:
    assert KCAT, "kcat is missing: run `make system-deps` (Debian package kcat)"
    topic = "tapstream.smoke" + (f".{unique_name}" if suffix else "")
    create_topic(stack.protected_bootstrap, topic)
    value = f"smoke {unique_name}"
    subprocess.run([KCAT, "-b", stack.protected_bootstrap, "-P", "-t", topic, "-k", "k"],
                   input=value, text=True, check=True, timeout=30)
    mirrored = f"protected.{topic}"
    seen = consume_until(stack.recovery_bootstrap, mirrored, {value.encode()})
    assert value.encode() in seen
    # and kcat reads it there too, as an operator would
    out = subprocess.run([KCAT, "-b", stack.recovery_bootstrap, "-C", "-t", mirrored, "-e", "-q"],
                         capture_output=True, text=True, timeout=30)
    assert value in out.stdout


def test_events_cross_both_ways_without_looping(stack, unique_name) -> None:
    topic = "tapstream.events"
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        create_topic(bootstrap, topic)
    from_p = f"from-protected {unique_name}".encode()
    from_r = f"from-recovery {unique_name}".encode()
    for bootstrap, value in ((stack.protected_bootstrap, from_p), (stack.recovery_bootstrap, from_r)):
        p = Producer({"bootstrap.servers": bootstrap})
        p.produce(topic, value, key=b"agg")
        assert p.flush(30) == 0
    assert from_p in consume_until(stack.recovery_bootstrap, "protected.tapstream.events", {from_p})
    assert from_r in consume_until(stack.protected_bootstrap, "recovery.tapstream.events", {from_r})
    # No loop: nothing is mirrored back under a double prefix, and each record exists once per side.
    for bootstrap in (stack.protected_bootstrap, stack.recovery_bootstrap):
        names = topics(bootstrap)
        assert not any(n.startswith(("protected.recovery.", "recovery.protected.")) for n in names), names
    on_p_local = consume_until(stack.protected_bootstrap, topic, {from_p}, timeout_s=20)
    assert on_p_local.count(from_p) == 1 and from_r not in on_p_local
    mirrored_back = consume_until(stack.protected_bootstrap, "recovery.tapstream.events", {from_r})
    assert from_p not in mirrored_back and mirrored_back.count(from_r) == 1


async def test_postgres_answers_on_both_sites(stack) -> None:
    for url in (stack.protected_database_url, stack.recovery_database_url):
        conn = await asyncpg.connect(url, timeout=10)
        try:
            assert await conn.fetchval("select 40 + 2") == 42
            assert (await conn.fetchval("show server_version")).split(".")[0].isdigit()
        finally:
            await conn.close()

"""Readiness probes: each asks the component a real question and polls it until a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

# librdkafka prints every refused connection while a broker starts; probes expect those.
_QUIET = logging.getLogger("tapstream.localstack.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class NotReady(RuntimeError):
    """A component did not become ready before its deadline; the message names its log file."""


def wait_for(what: str, probe: Callable[[], bool], timeout_s: float, log_file: Path | None) -> None:
    """Poll `probe` (which may raise) until it returns True or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as exc:  # a probe that raises is simply "not yet"
            last = exc
        time.sleep(0.25)
    hint = f"; see {log_file}" if log_file else ""
    raise NotReady(f"{what} not ready after {timeout_s:.0f}s (last error: {last!r}){hint}")


def kafka_answers(bootstrap: str) -> bool:
    """The broker answers a metadata request and names itself as a broker."""
    md = AdminClient({"bootstrap.servers": bootstrap}, logger=_QUIET).list_topics(timeout=2)
    return len(md.brokers) > 0


def topic_has_records(bootstrap: str, topic: str) -> bool:
    """`topic` exists and holds at least one record (used on MirrorMaker 2's mirrored heartbeats)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tapstream-probe",
                         "enable.auto.commit": False}, logger=_QUIET)
    try:
        md = consumer.list_topics(topic, timeout=2)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)
            if high > low:
                return True
        return False
    except KafkaException:
        return False
    finally:
        consumer.close()


def postgres_answers(url: str) -> bool:
    import asyncpg

    async def probe() -> bool:
        conn = await asyncpg.connect(url, timeout=2)
        try:
            return await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

    return asyncio.run(probe())

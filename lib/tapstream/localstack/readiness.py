"""Readiness probes: each asks the component a real question and polls it until a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

# librdkafka prints every refused connection while a broker starts; probes expect those.
QUIET = logging.getLogger("tapstream.localstack.probe")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


class NotReady(RuntimeError):
    """A component did not become ready before its deadline; the message names its log file."""


def wait_for(
    what: str,
    probe: Callable[[], bool],
    timeout_s: float,
    log_file: Path | None,
    running: Callable[[], object] | None = None,
) -> None:
    """Poll `probe` (which may raise) until it returns True or the deadline passes; give up at once
    when `running` (e.g. a pid lookup) returns something false: the process behind it has exited."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    hint = f"; see {log_file}" if log_file else ""
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as exc:  # a probe that raises is simply "not yet"
            last = repr(exc)
        if running is not None and not running():
            raise NotReady(f"{what} exited while starting{hint}")
        time.sleep(0.25)
    raise NotReady(f"{what} not ready after {timeout_s:.0f}s (last: {last}){hint}")


def kafka_answers(bootstrap: str, brokers: int = 1) -> bool:
    """The cluster answers a metadata request and names at least `brokers` live brokers (all of a
    multi-node site: topics of replication factor 3 cannot be created before)."""
    md = AdminClient({"bootstrap.servers": bootstrap}, logger=QUIET).list_topics(timeout=2)
    return len(md.brokers) >= brokers


def newest_timestamp_ms(
    bootstrap: str, topic: str, conf: Mapping[str, object] | None = None
) -> int | None:
    """Timestamp of the newest record of `topic` (max over partitions); None if it has none yet.

    Used on MirrorMaker 2's mirrored heartbeats: a fresh one proves that direction replicates now,
    where mere records could be left over from an earlier run. `conf`: client settings besides the
    bootstrap (a secured cluster's login)."""
    consumer = Consumer({**(conf or {}), "bootstrap.servers": bootstrap,
                         "group.id": "tapstream-probe", "enable.auto.commit": False},
                        logger=QUIET)  # fmt: skip
    # A TLS handshake and a SCRAM login (8192 rounds) take seconds on a busy machine.
    wait = 2 if conf is None else 10
    try:
        meta = consumer.list_topics(topic, timeout=wait).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        last = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=wait)
            if high > low:
                last.append(TopicPartition(topic, p, high - 1))
        if not last:
            return None
        consumer.assign(last)
        newest: int | None = None
        deadline = time.monotonic() + 5
        pending = len(last)
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            pending -= 1
            ts = msg.timestamp()[1]
            newest = ts if newest is None else max(newest, ts)
        return newest
    except KafkaException:
        return None
    finally:
        consumer.close()


def fresh_records(
    bootstrap: str, topic: str, since_s: float, conf: Mapping[str, object] | None = None
) -> bool:
    """`topic` has a record stamped at or after `since_s` (epoch seconds)."""
    newest = newest_timestamp_ms(bootstrap, topic, conf)
    return newest is not None and newest >= since_s * 1000


def postgres_answers(url: str) -> bool:
    import asyncpg

    async def probe() -> bool:
        conn = await asyncpg.connect(url, timeout=2)
        try:
            return await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

    return asyncio.run(probe())

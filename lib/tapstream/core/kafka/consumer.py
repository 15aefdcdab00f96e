"""Consumers built from settings: aiokafka for the services' loops, confluent-kafka for the
synchronous readers (CLI, restore, probes)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import confluent_kafka
from aiokafka import AIOKafkaConsumer, TopicPartition

from tapstream.core.kafka.config import aiokafka_config, consumer_config
from tapstream.core.settings import TapstreamSettings


def sync_consumer(
    source: TapstreamSettings | Mapping[str, Any],
    *,
    group_id: str,
    bootstrap: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> confluent_kafka.Consumer:
    """A confluent-kafka consumer with TLS and SASL as configured (see `consumer_config`)."""
    # Looked up at call time, so a test can stand in for the client.
    return confluent_kafka.Consumer(
        consumer_config(source, group_id=group_id, bootstrap=bootstrap, options=options)
    )


def make_consumer(
    settings: TapstreamSettings,
    *topics: str,
    group_id: str | None,
    bootstrap: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that reads committed data only and commits explicitly (at-least-once, by default)."""
    kwargs = aiokafka_config(settings, bootstrap)
    kwargs.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def partitions_now(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """The partitions `topics` have now, asked of the broker (none for a topic that does not exist
    yet). The topics are named again each time: aiokafka's assign() narrows the metadata it keeps
    to the assigned topics, so a topic created later (a mirrored one, say) would never be seen."""
    for topic in topics:
        consumer._client.add_topic(topic)
    await consumer._client.force_metadata_update()
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


async def assign_at(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], offsets: Mapping[int, int]
) -> None:
    """Assign `tps`, each at its offset in `offsets` (by partition: where a reader that keeps its
    own position left off) or, when it has none, at its beginning."""
    consumer.assign(tps)
    await seek_at(consumer, tps, offsets)


async def seek_at(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], offsets: Mapping[int, int]
) -> None:
    """Move each of `tps` (assigned) to its offset in `offsets` (by partition), or to its beginning
    when it has none: also what a consumer group member that keeps its offsets elsewhere does with
    the partitions it is given."""
    for tp in tps:
        if tp.partition in offsets:
            consumer.seek(tp, offsets[tp.partition])
        else:
            await consumer.seek_to_beginning(tp)


async def wait_for_partitions(
    consumer: AIOKafkaConsumer, topic: str, interval_s: float = 1.0
) -> list[TopicPartition]:
    """The partitions of `topic` once it exists (MirrorMaker 2 creates a mirrored topic with the
    first record it carries)."""
    while True:  # a broker question, not an event to wait on: ask again
        tps = await partitions_now(consumer, topic)
        if tps:
            return tps
        await asyncio.sleep(interval_s)

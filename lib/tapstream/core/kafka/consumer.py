"""aiokafka consumers built from settings."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

from tapstream.core.kafka.config import aiokafka_config
from tapstream.core.settings import TapstreamSettings


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

"""Poison records: what a consumer cannot use goes to `tapstream.dlq`, counted, and it carries on.

`classify` is pure: it turns a record's raw value into (record, None) or (None, Poison). A tombstone
(value None), bytes that do not decode, and a record of another type than the topic carries are all
poison. `DeadLetters` copies the original key and bytes to the dead-letter topic of the consumer's
own site, with where they came from and why in headers, so `kcat -t tapstream.dlq -J` shows them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import Counter

from tapstream.core.codec import Codec, DecodeError
from tapstream.core.kafka import AsyncProducer, TopicSpec, client_config, ensure_topics
from tapstream.core.kafka import producer_config as _producer_config
from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings

log = get_logger("tapstream.dlq")

DEAD_LETTERS = Counter(
    "tapstream_dead_letters_total",
    "Records a consumer could not use, copied to tapstream.dlq (reason: tombstone, undecodable, "
    "foreign, invalid).",
    ["service", "topic", "reason"],
)


class PoisonReason(StrEnum):
    """Why a record was set aside: the `tapstream.dlq.reason` header and the metric's label."""

    TOMBSTONE = "tombstone"  # no value
    UNDECODABLE = "undecodable"  # the codec raised DecodeError
    FOREIGN = "foreign"  # another record type than the topic carries
    INVALID = "invalid"  # decodes, but its content is unusable


@dataclass(frozen=True)
class Poison:
    reason: PoisonReason
    error: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", PoisonReason(self.reason))  # refuses an unknown reason


def classify(
    value: bytes | None, codec: Codec, expected: str
) -> tuple[dict[str, Any], None] | tuple[None, Poison]:
    """The decoded `expected` record, or why the value is poison."""
    if value is None:
        return None, Poison(PoisonReason.TOMBSTONE, "a record with no value (tombstone)")
    try:
        name, record = codec.decode(value)
    except DecodeError as exc:
        return None, Poison(PoisonReason.UNDECODABLE, str(exc))
    if name != expected:
        return None, Poison(PoisonReason.FOREIGN, f"a {name} where a {expected} belongs")
    return record, None


def headers(
    source_topic: str, partition: int, offset: int, poison: Poison, service: str
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead letter: where it came from and why it was set aside."""
    return [
        ("tapstream.dlq.topic", source_topic.encode()),
        ("tapstream.dlq.partition", str(partition).encode()),
        ("tapstream.dlq.offset", str(offset).encode()),
        ("tapstream.dlq.reason", poison.reason.encode()),
        ("tapstream.dlq.error", poison.error[:1000].encode()),
        ("tapstream.dlq.service", service.encode()),
    ]


class DeadLetters:
    """Copies poison records to `<prefix>.dlq` on this process's own site (fire and forget: a dead
    letter that cannot be written is logged; the consumer still moves on, it has already counted it)."""

    def __init__(self, settings: TapstreamSettings, service: str, bootstrap: str | None = None):
        self.s = settings
        self.service = service
        self.topic = settings.topic("dlq")
        self._bootstrap = bootstrap
        self._producer: AsyncProducer | None = None

    async def start(self) -> None:
        await ensure_topics(
            client_config(self.s, self._bootstrap), [TopicSpec(self.topic, partitions=1)]
        )
        self._producer = AsyncProducer(
            _producer_config(self.s, self._bootstrap, linger_ms=5, compression="none")
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop(timeout=5)
            self._producer = None

    def send(
        self,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        poison: Poison,
    ) -> asyncio.Future[Any] | None:
        """Count and log the poison record and queue its copy; the future settles on Kafka's ack
        (a consumer that commits offsets may await it first), None before start()."""
        DEAD_LETTERS.labels(self.service, source_topic, poison.reason).inc()
        log.error(
            "poison record set aside on the dead-letter topic",
            topic=source_topic,
            partition=partition,
            offset=offset,
            reason=poison.reason,
            error=poison.error,
            dlq=self.topic,
        )
        if self._producer is None:
            return None
        fut = self._producer.produce_nowait(
            self.topic,
            value if value is not None else b"",
            key=key,
            headers=headers(source_topic, partition, offset, poison, self.service),
        )
        fut.add_done_callback(_log_failure)
        return fut


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("dead letter not written", error=repr(fut.exception()))

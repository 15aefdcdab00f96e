"""tapstream.events on Kafka: the site manager's event store.

Appends go to this site's `tapstream.events` (idempotent, acks=all, keyed by aggregate id, so one
aggregate's events keep their order). Reads come from it and from the other site's copy that
MirrorMaker 2 keeps here (`<other alias>.tapstream.events`), from the offsets the projection stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.dlq import DeadLetters, Poison, PoisonReason, classify
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    make_consumer,
    partitions_now,
    producer_config,
)
from tapstream.core.settings import Site, TapstreamSettings
from tapstream.site_manager.domain import Recorded
from tapstream.site_manager.domain.events import UnknownEvent


@dataclass
class Read:
    topic: str
    partition: int
    offset: int
    record: Recorded | None  # None: poison (on tapstream.dlq); skipped, offset still advances


Handler = Callable[[list[Read]], Awaitable[None]]


class EventLog:
    def __init__(self, settings: TapstreamSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.local = settings.topic("events")
        other: Site = "recovery" if settings.site == "protected" else "protected"
        self.remote = settings.mirrored(self.local, source=other)
        self._producer: AsyncProducer | None = None
        self.dead = DeadLetters(settings, "site-manager")
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        await ensure_topics(client_config(self.s), [TopicSpec(self.local, partitions=1)])
        self._producer = AsyncProducer(producer_config(self.s, linger_ms=0))
        await self._producer.start()
        await self.dead.start()

    async def append(self, records: list[Recorded]) -> None:
        assert self._producer is not None
        futures = [
            self._producer.produce_nowait(
                self.local,
                self.codec.encode("DomainEvent", r.to_record()),
                key=r.aggregate_id.encode(),
            )
            for r in records
        ]
        await asyncio.gather(*futures)

    def follow(self, offsets: dict[tuple[str, int], int], handler: Handler) -> None:
        self._task = asyncio.create_task(self._follow(offsets, handler))

    async def wait_caught_up(self, within_s: float = 120) -> None:
        """Until everything the topics held at start is applied; raises if reading failed."""
        assert self._task is not None
        waiter = asyncio.ensure_future(self.caught_up.wait())
        done, _ = await asyncio.wait(
            [waiter, self._task], timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done:
            waiter.cancel()
            await self._task  # raises what stopped it
        if waiter not in done:
            waiter.cancel()
            raise TimeoutError(
                f"{self.local} and {self.remote} not read to their end within {within_s:.0f}s"
            )

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
        await self.dead.stop()

    async def _follow(self, offsets: dict[tuple[str, int], int], handler: Handler) -> None:
        consumer = make_consumer(
            self.s, group_id=None, metadata_max_age_ms=2000, isolation_level="read_uncommitted"
        )
        await consumer.start()
        assigned: set[TopicPartition] = set()
        targets: dict[TopicPartition, int] = {}
        looked = 0.0
        try:
            while True:
                now = asyncio.get_running_loop().time()
                if (
                    self.remote not in {tp.topic for tp in assigned} or not assigned
                ) and now - looked > 1:
                    looked = now
                    found = set(await partitions_now(consumer, self.local, self.remote))
                    if found - assigned:
                        assigned = found
                        consumer.assign(sorted(assigned))
                        ends = await consumer.end_offsets(sorted(found))
                        for tp in found:
                            start = offsets.get((tp.topic, tp.partition))
                            if start is None:
                                await consumer.seek_to_beginning(tp)
                            else:
                                consumer.seek(tp, start)
                            targets.setdefault(tp, ends[tp])
                batch = await consumer.getmany(timeout_ms=300, max_records=500)
                reads: list[Read] = []
                dead: list[asyncio.Future[Any]] = []
                for tp, msgs in batch.items():
                    for msg in msgs:
                        reads.append(
                            Read(tp.topic, tp.partition, msg.offset, self._decode(msg, dead))
                        )
                # The copies are on the dead-letter topic before the projection stores offsets.
                await asyncio.gather(*dead, return_exceptions=True)
                if reads:
                    await handler(reads)
                if not self.caught_up.is_set() and assigned:
                    positions = [await consumer.position(tp) for tp in targets]
                    if all(p >= end for p, end in zip(positions, targets.values(), strict=True)):
                        self.caught_up.set()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _decode(
        self, msg: ConsumerRecord[bytes, bytes], dead: list[asyncio.Future[Any]]
    ) -> Recorded | None:
        """The event, or None for poison, which goes to the dead-letter topic (future in `dead`)."""
        record, poison = classify(msg.value, self.codec, "DomainEvent")
        if record is not None:
            try:
                return Recorded.from_record(record)
            except (UnknownEvent, KeyError, ValueError, TypeError) as exc:
                poison = Poison(PoisonReason.INVALID, f"not readable by this site manager: {exc!r}")
        assert poison is not None
        fut = self.dead.send(msg.topic, msg.partition, msg.offset, msg.key, msg.value, poison)
        if fut is not None:
            dead.append(fut)
        return None

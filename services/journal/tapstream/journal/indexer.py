"""The journal service: indexes the mirrored write stream (and the replicas' progress) in Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import time
from asyncio import Future
from typing import Any

from aiokafka import ConsumerRecord

from tapstream.core.codec import make_codec
from tapstream.core.dlq import DeadLetters, Poison, PoisonReason, classify
from tapstream.core.kafka import assign_at, make_consumer, wait_for_partitions
from tapstream.core.keep import TagRequest
from tapstream.core.logging import get_logger
from tapstream.core.records import ProgressSource
from tapstream.core.tag_follower import TagFollower
from tapstream.journal import metrics
from tapstream.journal.rows import to_rows, unusable
from tapstream.journal.settings import JournalSettings
from tapstream.journal.store import JournalStore

log = get_logger("tapstream.journal")


class Journal:
    def __init__(self, settings: JournalSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.store = JournalStore(settings.database_url)
        self.dead = DeadLetters(settings, "journal")
        self._tasks: list[asyncio.Task[None]] = []

    def topic(self, group: str) -> str:
        return self.s.mirrored(self.s.topic(f"writes.{group}"))

    async def start(self) -> None:
        if not self.s.journal_groups:
            raise ValueError('no protection groups: set TAPSTREAM_JOURNAL_GROUPS, e.g. ["g1"]')
        await self.store.start()
        await self.dead.start()
        if self.s.journal_rebuild:
            for g in self.s.journal_groups:
                await self.store.reset(self.topic(g), g)
                log.warning(
                    "index dropped; rebuilding from the topic", group=g, topic=self.topic(g)
                )
        self._tasks = [asyncio.create_task(self._index(g)) for g in self.s.journal_groups]
        self._tasks.append(asyncio.create_task(self._progress()))
        self._tasks.append(asyncio.create_task(self._tags()))

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.dead.stop()
        await self.store.stop()

    async def _index(self, group: str) -> None:
        topic = self.topic(group)
        consumer = make_consumer(self.s, group_id=None, metadata_max_age_ms=2000)
        await consumer.start()
        try:
            tps = await wait_for_partitions(
                consumer, topic
            )  # mirrored: appears with the first write
            await assign_at(consumer, tps, await self.store.offsets(topic))
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=self.s.journal_batch_max)
                if not batch:
                    continue
                t0 = time.perf_counter()
                events, cps, offsets, dead = [], [], {}, []
                for tp, msgs in batch.items():
                    for msg in msgs:
                        offsets[(tp.topic, tp.partition)] = msg.offset + 1
                        rec, poison = classify(msg.value, self.codec, "DiskEvent")
                        if rec is not None and (why := unusable(rec, group)):
                            rec, poison = None, Poison(PoisonReason.INVALID, why)
                        if rec is None:
                            # No row: the offset still advances; restore sees the missing seq.
                            assert poison is not None
                            dead.append(self._dead_letter(msg, poison))
                            continue
                        ev, cp = to_rows(rec, tp.topic, tp.partition, msg.offset)
                        events.append(ev)
                        if cp:
                            cps.append(cp)
                # The copies are on the dead-letter topic before the offset moves past them.
                await asyncio.gather(*(f for f in dead if f is not None), return_exceptions=True)
                await self.store.write(events, cps, offsets)
                metrics.INDEXED.labels(group).inc(len(events))
                metrics.INDEX_SECONDS.observe(time.perf_counter() - t0)
        finally:
            await consumer.stop()

    async def _tags(self) -> None:
        """Record CHECKPOINT_TAG commands of our groups from the mirrored control topic. Always read from
        the beginning (no committed offsets): a dropped or rebuilt index gets its tags back, and
        recording a command twice changes nothing."""
        # The same reader as the recovery VDSA's holds: the index must not show a kept checkpoint
        # released.
        follower = TagFollower(
            self.s, self.s.journal_groups, "journal", on_poison=self._dead_letter, absent_poll_s=1.0
        )
        await follower.run(self._record_tags)

    async def _record_tags(self, requests: list[TagRequest]) -> None:
        if not requests:
            return
        await self.store.tag(requests)
        for r in requests:
            log.info(
                "checkpoint tag recorded",
                group=r.group,
                checkpoint=r.checkpoint_id,
                tag=r.tag,
                keep=r.keep,
                reason=r.reason,
                sender=r.sender,
            )

    async def _progress(self) -> None:
        """Follow the replicas' applied positions, so restorability is known and old rows trimmed."""
        consumer = make_consumer(
            self.s, self.s.topic("progress"), group_id=None, auto_offset_reset="latest"
        )
        await consumer.start()
        last_trim = 0.0
        try:
            async for msg in consumer:
                p, poison = classify(msg.value, self.codec, "Progress")
                if p is None:
                    assert poison is not None
                    self._dead_letter(msg, poison)
                    continue
                if p["source"] == ProgressSource.VDSA and p["group"] in self.s.journal_groups:
                    await self.store.set_applied(p["group"], p["volume"], p["applied_seq"])
                if time.monotonic() - last_trim > 10:
                    for g in self.s.journal_groups:
                        await self.store.trim(g)
                    last_trim = time.monotonic()
        finally:
            await consumer.stop()

    def _dead_letter(self, msg: ConsumerRecord[bytes, bytes], poison: Poison) -> Future[Any] | None:
        return self.dead.send(msg.topic, msg.partition, msg.offset, msg.key, msg.value, poison)

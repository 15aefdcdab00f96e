"""The journal service: indexes the mirrored write stream (and the replicas' progress) in Postgres.

One process reads every partition of its groups' topics (assigned, at the offsets Postgres holds).
With TAPSTREAM_JOURNAL_SHARE_PARTITIONS, several processes share them through the consumer group
tapstream-journal-index: each assigned partition is read from the offset Postgres holds, a batch in
progress is written before a partition is given up, and a write only lands if the partitions'
stored offsets are still where this process left them (positions.py), so the index still holds
each event once. Tags and progress are followed by every process (idempotent writes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from asyncio import Future
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.dlq import DeadLetters, Poison, PoisonReason, classify
from tapstream.core.kafka import assign_at, make_consumer, seek_at, wait_for_partitions
from tapstream.core.keep import TagRequest
from tapstream.core.logging import get_logger
from tapstream.core.records import ProgressSource
from tapstream.core.tag_follower import TagFollower
from tapstream.journal import metrics
from tapstream.journal.positions import Positions
from tapstream.journal.rows import to_rows, unusable
from tapstream.journal.settings import JournalSettings
from tapstream.journal.store import JournalStore, StaleOffsets

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
        shared: Positions | None = None
        if self.s.journal_share_partitions:
            shared = Positions()
            consumer = make_consumer(
                self.s, group_id="tapstream-journal-index", metadata_max_age_ms=2000
            )
        else:
            consumer = make_consumer(self.s, group_id=None, metadata_max_age_ms=2000)
        await consumer.start()
        batch_lock = asyncio.Lock()  # a rebalance waits for the batch being written
        try:
            tps = await wait_for_partitions(
                consumer, topic
            )  # mirrored: appears with the first write
            if shared is not None:
                consumer.subscribe(
                    [topic], listener=_Shared(self, consumer, group, topic, shared, batch_lock)
                )
            else:
                await assign_at(consumer, tps, await self.store.offsets(topic))
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=self.s.journal_batch_max)
                if not batch:
                    continue
                async with batch_lock:
                    await self._write_batch(group, consumer, batch, shared)
        finally:
            await consumer.stop()

    async def _write_batch(
        self,
        group: str,
        consumer: Any,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        shared: Positions | None,
    ) -> None:
        if shared is not None:
            # Fetched before a rebalance took the partition away: its new owner indexes it.
            batch = {tp: msgs for tp, msgs in batch.items() if shared.owns(tp)}
            if not batch:
                return
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
        if shared is None:
            await self.store.write(events, cps, offsets)
        else:
            try:
                await self.store.write(events, cps, offsets, expect=shared.expect(offsets))
            except StaleOffsets as exc:
                await self._reread(consumer, group, batch, shared, exc.parts)
                return
            shared.wrote(offsets)
        metrics.INDEXED.labels(group).inc(len(events))
        metrics.INDEX_SECONDS.observe(time.perf_counter() - t0)

    async def _reread(
        self,
        consumer: Any,
        group: str,
        batch: dict[TopicPartition, Any],
        shared: Positions,
        moved: set[tuple[str, int]],
    ) -> None:
        """Another process wrote some of the batch's partitions: nothing of the batch was written;
        every partition in it is read again from what Postgres holds (if still ours)."""
        log.warning(
            "another journal process indexes these partitions now; this batch was not written",
            group=group,
            partitions=sorted(f"{t}[{p}]" for t, p in moved),
        )
        topics = {tp.topic for tp in batch}
        for topic in topics:
            stored = await self.store.offsets(topic)
            tps = [tp for tp in batch if tp.topic == topic and shared.owns(tp)]
            shared.revoke(tps)
            shared.assign(tps, stored)
            await seek_at(consumer, tps, stored)

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


class _Shared(ConsumerRebalanceListener):
    """The consumer group's callbacks for one group's topic: a partition is read from the offset
    Postgres holds; one given up waits for the batch being written (revocations everywhere come
    before any assignment, so its new owner reads what that batch stored)."""

    def __init__(
        self,
        journal: Journal,
        consumer: Any,
        group: str,
        topic: str,
        positions: Positions,
        batch_lock: asyncio.Lock,
    ) -> None:
        self.journal = journal
        self.consumer = consumer
        self.group = group
        self.topic = topic
        self.positions = positions
        self.batch_lock = batch_lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.batch_lock:
            self.positions.revoke(revoked)
        metrics.PARTITIONS.labels(self.group).set(len(self.positions.owned))
        if revoked:
            log.info("partitions revoked", group=self.group, partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.batch_lock:
            stored = await self._stored()
            tps = sorted(assigned)
            self.positions.assign(tps, stored)
            await seek_at(self.consumer, tps, stored)
        metrics.PARTITIONS.labels(self.group).set(len(self.positions.owned))
        log.info(
            "partitions assigned",
            group=self.group,
            partitions=_names(assigned),
            offsets={p: stored.get(p) for _, p in tps},
        )

    async def _stored(self) -> dict[int, int]:
        """Postgres's offsets of the topic; asked again until it answers (a partition is never read
        from anywhere else)."""
        while True:
            try:
                return await self.journal.store.offsets(self.topic)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning(
                    "cannot read the stored offsets of the partitions just assigned; retrying",
                    group=self.group,
                    error=repr(exc),
                )
                await asyncio.sleep(2)


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)

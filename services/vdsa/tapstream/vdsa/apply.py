"""Recovery VDSA: applies mirrored writes older than the journal history to the replica volumes.

Events are applied in order per volume; a batch is fdatasync'ed, then each touched replica's
position is saved, then the consumer offsets are committed. A young event pauses its partition
until it has aged past the history window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from tapstream.core.codec import DecodeError, make_codec
from tapstream.core.kafka import AsyncProducer, make_consumer, producer_config
from tapstream.core.logging import get_logger
from tapstream.core.replay import apply_body
from tapstream.core.replica import Position, Replica
from tapstream.vdsa import metrics
from tapstream.vdsa.settings import VdsaSettings

log = get_logger("tapstream.vdsa.apply")


@dataclass
class VolumeState:
    replica: Replica
    pos: Position
    fd: int = -1
    dirty: bool = False
    newest_seq: int = 0
    newest_ts: int = 0
    group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Applier:
    def __init__(self, settings: VdsaSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.volumes: dict[tuple[str, str], VolumeState] = {}
        self._task: asyncio.Task[None] | None = None
        self._producer: AsyncProducer | None = None
        self._stopping = False

    async def start(self) -> None:
        self._producer = AsyncProducer(producer_config(self.s, linger_ms=5))
        await self._producer.start()
        self._task = asyncio.create_task(self._run())

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for st in self.volumes.values():
            if st.fd >= 0:
                os.close(st.fd)
        if self._producer:
            await self._producer.stop()

    def _state(self, group: str, volume: str) -> VolumeState:
        key = (group, volume)
        st = self.volumes.get(key)
        if st is None:
            replica = Replica(self.s.replica_dir, group, volume)
            st = VolumeState(replica, replica.position(), group=group)
            st.fd = replica.open()
            self.volumes[key] = st
        return st

    async def _run(self) -> None:
        topics = {self.s.mirrored(self.s.topic(f"writes.{g}")): g for g in self.s.vdsa_groups}
        consumer = make_consumer(self.s, *topics, group_id="tapstream-vdsa-apply",
                                 metadata_max_age_ms=2000, max_poll_records=500)
        await consumer.start()
        history_us = int(self.s.vdsa_journal_history_s * 1e6)
        last_progress = 0.0
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                applied: dict[TopicPartition, int] = {}
                touched: set[tuple[str, str]] = set()
                now = time.time_ns() // 1000
                for tp, msgs in batch.items():
                    for msg in msgs:
                        try:
                            _, rec = self.codec.decode(msg.value)
                        except DecodeError as exc:
                            log.error("undecodable record skipped", topic=tp.topic, offset=msg.offset, error=str(exc))
                            applied[tp] = msg.offset + 1
                            continue
                        st = self._state(rec["group"], rec["volume"])
                        st.newest_seq = max(st.newest_seq, rec["seq"])
                        st.newest_ts = max(st.newest_ts, rec["ts"])
                        if rec["ts"] > now - history_us:
                            # Too young: stays in the journal only. Re-read it once it has aged.
                            consumer.seek(tp, msg.offset)
                            consumer.pause(tp)
                            delay = (rec["ts"] + history_us - now) / 1e6
                            asyncio.get_running_loop().call_later(max(0.05, delay), consumer.resume, tp)
                            break
                        if rec["seq"] > st.pos.seq:
                            self._apply(st, rec)
                            st.pos = Position(rec["seq"], tp.partition, msg.offset, rec["ts"])
                            touched.add((rec["group"], rec["volume"]))
                        applied[tp] = msg.offset + 1
                if touched:
                    await asyncio.to_thread(self._persist, touched)
                if applied:
                    await consumer.commit({tp: off for tp, off in applied.items()})
                if time.monotonic() - last_progress > self.s.vdsa_progress_interval_s:
                    await self._publish_progress()
                    last_progress = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _apply(self, st: VolumeState, rec: dict[str, Any]) -> None:
        branch, body = rec["body"]
        with st.replica.lock():
            apply_body(st.fd, rec["body"])
        if branch == "Checkpoint" and body.get("volume_size"):
            if os.fstat(st.fd).st_size < body["volume_size"]:
                os.ftruncate(st.fd, body["volume_size"])
        st.dirty = True
        metrics.APPLIED.labels(rec["group"], rec["volume"]).inc()

    def _persist(self, touched: set[tuple[str, str]]) -> None:
        for key in touched:
            st = self.volumes[key]
            with st.replica.lock():
                os.fdatasync(st.fd)
                st.replica.save_position(st.pos)
            st.dirty = False

    async def _publish_progress(self) -> None:
        assert self._producer is not None
        now = time.time_ns() // 1000
        for (group, volume), st in self.volumes.items():
            rpo = max(0.0, (now - st.newest_ts) / 1e6) if st.newest_ts else 0.0
            value = self.codec.encode("Progress", {
                "group": group, "volume": volume, "site": "recovery", "source": "vdsa",
                "applied_seq": st.pos.seq, "applied_ts": st.pos.ts, "applied_offset": st.pos.offset,
                "newest_seq_seen": st.newest_seq, "rpo_seconds": rpo,
                "lag_records": max(0, st.newest_seq - st.pos.seq), "ts": now})
            metrics.APPLIED_SEQ.labels(group, volume).set(st.pos.seq)
            self._producer.produce_nowait(self.s.topic("progress"), value, key=volume.encode())

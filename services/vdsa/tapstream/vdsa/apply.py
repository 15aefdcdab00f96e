"""Recovery VDSA: applies mirrored writes older than the journal history to the replica volumes.

Every record goes through the stream contract (core.contract): per volume, consecutive seq,
checksums and sync brackets. A gap, a bad checksum, a broken bracket or an undecodable record of a
volume halts that volume at its last good event (halts.py says so and asks for a resync); poison
that belongs to no volume goes to tapstream.dlq. Nothing is skipped silently, nothing crash-loops.

Per batch and per volume, the events are applied, fdatasync'ed and the position (with the
contract's cursor) saved under the replica's lock in one go, so a restore, which copies the replica
under the same lock, never sees bytes past the saved position; then the offsets are committed. A
young event pauses its partition until it has aged past the history window. An I/O error (a full
disk) leaves that volume at its saved position and retries its partitions later; others go on.

While a checkpoint view (instant recovery) is open on a replica, each event's range is first copied
aside for it (tapstream.instant.preserve): the view keeps its base and replication goes on.

A kept checkpoint (CHECKPOINT_TAG with keep, on the mirrored control topic) stops its volume at the
checkpoint's marker until it is released: the replica then is the checkpoint, restorable however old.
The consumer offset is committed up to, not past, the marker, so after a restart it is read and held
again. Holding pauses the whole partition, so other volumes that share it wait too.

Several VDSA processes share a group's partitions through the consumer group (scale-out): before a
partition is given up, its volumes' applied records are persisted and committed, then forgotten;
whoever gets it loads them from their saved positions (ownership.py decides what a rebalance drops
and loads). A replica's saved position is checked under its lock before each write: one that moved
without this process (another owns the volume now) makes it drop what it held instead of writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.contract import Cursor, Halt
from tapstream.core.dlq import DeadLetters, Poison, PoisonReason, classify
from tapstream.core.kafka import AsyncProducer, make_consumer, producer_config
from tapstream.core.keep import TagRequest, decide
from tapstream.core.logging import get_logger
from tapstream.core.names import valid_name
from tapstream.core.records import ProgressSource
from tapstream.core.replay import apply_body
from tapstream.core.replica import Position, Replica
from tapstream.instant.preserve import Preserver
from tapstream.vdsa import metrics, ownership
from tapstream.vdsa.halts import HaltReporter
from tapstream.vdsa.holds import HoldFollower
from tapstream.vdsa.settings import VdsaSettings
from tapstream.vdsa.stream import undecodable, volume_key

log = get_logger("tapstream.vdsa.apply")


@dataclass
class VolumeState:
    replica: Replica
    pos: Position
    cursor: Cursor
    fd: int = -1
    newest_seq: int = 0
    newest_ts: int = 0
    group: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    held_at: str | None = None  # id of the kept checkpoint this volume stopped at
    pending: list[dict[str, Any]] = field(default_factory=list)  # records to apply this batch
    preserver: Preserver | None = None  # copies aside what open checkpoint views still read
    part: ownership.Part | None = None  # the partition its records come from
    saved_seq: int = 0  # the seq of the position this process last loaded or saved


class StaleReplica(Exception):
    """The replica's saved position moved without this process: another VDSA applies the volume."""


MARKERS_REMEMBERED = 10_000


class Applier:
    def __init__(self, settings: VdsaSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.volumes: dict[tuple[str, str], VolumeState] = {}
        self._task: asyncio.Task[None] | None = None
        self._producer: AsyncProducer | None = None
        self._stopping = False
        self.holds = HoldFollower(
            settings, settings.vdsa_groups, self._on_keep_change, settings.replica_dir
        )
        self.dlq = DeadLetters(settings, "vdsa")
        self.halts: HaltReporter | None = None
        self._consumer: Any = None
        self._held_tps: dict[TopicPartition, set[tuple[str, str]]] = {}
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}  # paused until they fire
        self._owned: set[TopicPartition] = set()  # assigned by the consumer group
        self._released: dict[tuple[str, str], ownership.Released] = {}  # since the last assignment
        self._batch = asyncio.Lock()  # a batch is applied, persisted and committed as one
        self._io_failing: set[tuple[str, str]] = set()  # replicas whose last write failed
        # (group, checkpoint) -> volume -> (marker seq, partition, offset), of markers the applier read.
        self.markers: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {}

    async def start(self) -> None:
        self._producer = AsyncProducer(producer_config(self.s, linger_ms=5))
        await self._producer.start()
        await self.dlq.start()
        self.halts = HaltReporter(self.s, self.codec, self._producer)
        self._load_halted()
        self.holds.start()
        self._task = asyncio.create_task(self._run())

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            # The batch in progress is persisted and committed before the group hands its
            # partitions to another process (the consumer leaves the group as the task ends).
            held = False
            with contextlib.suppress(TimeoutError):
                held = await asyncio.wait_for(self._batch.acquire(), 30)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if held:
                self._batch.release()
        for st in self.volumes.values():
            if st.fd >= 0:
                os.close(st.fd)
        await self.holds.stop()
        await self.dlq.stop()
        if self.halts:
            await self.halts.stop()
        if self._producer:
            await self._producer.stop()

    def topic(self, group: str) -> str:
        return self.s.mirrored(self.s.topic(f"writes.{group}"))

    def _state(self, group: str, volume: str) -> VolumeState:
        key = (group, volume)
        st = self.volumes.get(key)
        if st is None:
            replica = Replica(self.s.replica_dir, group, volume)
            pos = replica.position()
            cursor = Cursor(volume, pos.seq, list(pos.open_syncs), pos.halt)
            st = VolumeState(replica, pos, cursor, group=group, preserver=Preserver(replica.image))
            st.part = ownership.part(self.topic(group), pos.partition)
            st.saved_seq = pos.seq
            st.fd = replica.open()
            self.volumes[key] = st
        return st

    def _halted_on_disk(self) -> dict[tuple[str, str], ownership.Part | None]:
        """Every halted replica of our groups, with the partition its saved position names."""
        found: dict[tuple[str, str], ownership.Part | None] = {}
        for group in self.s.vdsa_groups:
            base = self.s.replica_dir / group
            for pos_file in sorted(base.glob("*.pos.json")) if base.is_dir() else []:
                volume = pos_file.name.removesuffix(".pos.json")
                if not valid_name(volume):
                    continue
                pos = Replica(self.s.replica_dir, group, volume).position()
                if pos.halt:
                    found[(group, volume)] = ownership.part(self.topic(group), pos.partition)
        return found

    def _load_halted(self) -> None:
        """Volumes halted before a restart are known (gauge, status, resync) before any record;
        those in partitions another process gets are let go at the first assignment."""
        for group, volume in self._halted_on_disk():
            self._state(group, volume)

    async def _run(self) -> None:
        # Every hold asked for so far must be known before anything is applied, or a restart could
        # apply past a kept checkpoint.
        while not self.holds.caught_up.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.holds.caught_up.wait(), 30)
            if not self.holds.caught_up.is_set():
                log.warning(
                    "still reading kept checkpoints from the control topic; nothing applied yet",
                    topic=self.holds.topic,
                )
        topics = {self.topic(g): g for g in self.s.vdsa_groups}
        consumer = make_consumer(
            self.s,
            group_id="tapstream-vdsa-apply",
            metadata_max_age_ms=2000,
            max_poll_records=500,
        )
        consumer.subscribe(list(topics), listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        last_progress = 0.0
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if batch:
                    # A rebalance waits for the batch: its partitions are given up only once what
                    # was applied from them is persisted and committed.
                    async with self._batch:
                        await self._apply_batch(consumer, topics, batch)
                if time.monotonic() - last_progress > self.s.vdsa_progress_interval_s:
                    await self._publish_progress()
                    last_progress = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _apply_batch(
        self, consumer: Any, topics: dict[str, str], batch: dict[TopicPartition, list[Any]]
    ) -> None:
        applied: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, int] = {}
        touched: set[tuple[str, str]] = set()
        now = now_us()
        for tp, msgs in batch.items():
            if tp not in self._owned:
                continue  # fetched before a rebalance took it away
            if msgs:
                first[tp] = msgs[0].offset
            for msg in msgs:
                done = self._one(consumer, tp, topics[tp.topic], msg, now, touched)
                if done is None:
                    break
                applied[tp] = done
        if touched:
            failed, stale = await asyncio.to_thread(self._persist, touched)
            for tp in self._reread(consumer, failed, first, self.s.vdsa_retry_io_s):
                applied.pop(tp, None)
            for tp in self._reread(consumer, stale, first, 0.0):
                applied.pop(tp, None)
        await self._commit(consumer, applied)

    async def _commit(self, consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        """Commit what is persisted. A commit the group refuses (it rebalanced meanwhile) is no
        loss: the saved positions are the authority, and the next owner skips what they cover."""
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), 30)
        except (CommitFailedError, IllegalStateError, KafkaError, TimeoutError) as exc:
            log.warning(
                "offsets not committed; the partitions' next reader skips what the replicas hold",
                partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets),
                error=repr(exc),
            )

    # --- rebalances: ownership.py decides, this does the I/O ------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch:
            self._owned -= set(revoked)
            plan = ownership.on_revoke(
                {k: st.part for k, st in self.volumes.items()},
                self._held_tps,
                list(self._timers),
                revoked,
            )
            for tp in plan.cancel:
                handle = self._timers.pop(tp, None)
                if handle is not None:
                    handle.cancel()
            self._held_tps = plan.held
            unsaved = {k for k in plan.release if self.volumes[k].pending}
            if unsaved:  # a batch always persists before it ends: this is only a safety net
                await asyncio.to_thread(self._persist, unsaved)
            for key in plan.release:
                self._release(key)
            self._partitions_gauge()
            if revoked:
                log.info(
                    "partitions revoked",
                    partitions=_names(revoked),
                    volumes_released=len(plan.release),
                )

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._batch:
            self._owned = set(assigned)
            halted = await asyncio.to_thread(self._halted_on_disk)
            plan = ownership.on_assign(
                {k: st.part for k, st in self.volumes.items()}, self._released, halted, assigned
            )
            for key in plan.release:
                self._release(key)
            for key in plan.gone:
                self._forget_gauges(key, self._released.get(key))
            self._released = {}
            for group, volume in plan.load:
                try:
                    self._state(group, volume)
                except OSError as exc:
                    self._io_failed(group, volume, exc, "opening the replica")
            self._partitions_gauge()
            log.info(
                "partitions assigned",
                partitions=_names(assigned),
                halted_loaded=len(plan.load),
                volumes_let_go=len(plan.gone),
            )

    def _release(self, key: tuple[str, str]) -> None:
        """Forget a volume: its saved position says where the next owner (maybe this process)
        starts; what this process's gauges say of it is settled at the next assignment."""
        st = self.volumes.pop(key, None)
        if st is None:
            return
        if st.fd >= 0:
            os.close(st.fd)
        if st.preserver is not None:
            st.preserver.close()
        self._released[key] = ownership.Released(
            st.part,
            (st.cursor.halt or {}).get("reason"),
            st.held_at is not None,
            key in self._io_failing,
        )

    def _forget_gauges(self, key: tuple[str, str], was: ownership.Released | None) -> None:
        """Another process applies the volume now: its gauges are that process's to set."""
        group, volume = key
        if was is None:
            return
        if was.halt_reason is not None and self.halts is not None:
            self.halts.forget(group, volume, was.halt_reason)
        if was.held:
            metrics.HELD.labels(group, volume).set(0)
        if was.io_failing:
            self._io_failing.discard(key)
            metrics.IO_FAILING.labels(group, volume).set(0)

    def _partitions_gauge(self) -> None:
        for group in self.s.vdsa_groups:
            topic = self.topic(group)
            metrics.PARTITIONS.labels(group).set(sum(1 for tp in self._owned if tp.topic == topic))

    def _pause_for(self, consumer: Any, tp: TopicPartition, delay: float) -> None:
        """Pause a partition and resume it after `delay` s (unless revoked or held meanwhile)."""
        consumer.pause(tp)
        old = self._timers.pop(tp, None)
        if old is not None:
            old.cancel()
        self._timers[tp] = asyncio.get_running_loop().call_later(delay, self._resume, tp)

    def _one(
        self,
        consumer: Any,
        tp: TopicPartition,
        group: str,
        msg: Any,
        now: int,
        touched: set[tuple[str, str]],
    ) -> int | None:
        """Decide on one record; returns the offset to commit after it, or None to stop reading
        this partition in this batch (paused: young, or held)."""
        rec, poison = classify(msg.value, self.codec, "DiskEvent")
        if rec is not None and (rec["group"] != group or not valid_name(rec["volume"])):
            where = f"volume {rec['volume']!r} of group {rec['group']!r} in {tp.topic}"
            rec, poison = None, Poison(PoisonReason.INVALID, where)
        if rec is None:
            assert poison is not None
            self.dlq.send(tp.topic, tp.partition, msg.offset, msg.key, msg.value, poison)
            volume = volume_key(msg.key)
            if poison.reason == "undecodable" and volume is not None:
                st = self._state(group, volume)
                st.part = tp
                self._halt(st, undecodable(tp.topic, tp.partition, msg.offset, poison, st.cursor))
                touched.add((group, volume))
            return int(msg.offset) + 1
        try:
            st = self._state(group, rec["volume"])
        except OSError as exc:
            # The replica cannot even be opened (its directory or image cannot be created: a full
            # disk): read the partition again from this record later; the others go on.
            self._io_failed(group, rec["volume"], exc, "opening the replica")
            consumer.seek(tp, msg.offset)
            self._pause_for(consumer, tp, self.s.vdsa_retry_io_s)
            return None
        st.part = tp
        st.newest_seq = max(st.newest_seq, rec["seq"])
        st.newest_ts = max(st.newest_ts, rec["ts"])
        if st.held_at is not None or tp in self._held_tps:
            # Fetched before the partition was paused for a hold: read again on release.
            consumer.seek(tp, msg.offset)
            consumer.pause(tp)
            return None
        history_us = int(self.s.vdsa_journal_history_s * 1e6)
        if rec["ts"] > now - history_us:
            # Too young: stays in the journal only. Re-read it once it has aged.
            consumer.seek(tp, msg.offset)
            delay = (rec["ts"] + history_us - now) / 1e6
            self._pause_for(consumer, tp, max(0.05, delay))
            return None
        try:
            verdict = st.cursor.check(rec)
        except Halt as halt:
            self._halt(st, halt)
            touched.add((group, rec["volume"]))
            return int(msg.offset) + 1
        if verdict == "halted":
            return int(msg.offset) + 1
        branch, body = rec["body"]
        if branch == "Checkpoint":
            self._remember_marker(rec, tp.partition, msg.offset)
        action = decide(branch, body, rec["seq"], st.cursor.seq, self.holds.keeps, group)
        if action in ("apply", "apply-and-hold"):
            reason = (st.cursor.halt or {}).get("reason")
            st.cursor.advance(rec)
            if verdict == "heal" and reason is not None and self.halts:
                self.halts.healed(group, rec["volume"], reason)
            st.pending.append(rec)
            st.pos = Position(rec["seq"], tp.partition, msg.offset, rec["ts"])
            touched.add((group, rec["volume"]))
        if action in ("hold", "apply-and-hold"):
            self._hold(tp, st, group, rec["volume"], body["id"])
            # Commit up to the marker, not past it: after a restart it is read, and held, again.
            consumer.seek(tp, msg.offset)
            consumer.pause(tp)
            return int(msg.offset)
        return int(msg.offset) + 1

    def _halt(self, st: VolumeState, halt: Halt) -> None:
        if st.cursor.halt is not None:
            return  # already halted: the first cause is the one to report
        st.cursor.stop(halt)
        assert self.halts is not None
        self.halts.halted(st.group, st.cursor.volume, st.cursor.halt or {}, st.pos.offset)

    def _reread(
        self,
        consumer: Any,
        keys: set[tuple[str, str]],
        first: dict[TopicPartition, int],
        pause_s: float,
    ) -> list[TopicPartition]:
        """Volumes whose batch was not written go back to their saved state; their partitions
        are read again from this batch's start (others' events there are then redeliveries),
        after `pause_s` (an I/O error: later; a stale replica: at once, if still ours)."""
        tps: list[TopicPartition] = []
        for key in keys:
            st = self.volumes.pop(key, None)
            if st is not None and st.fd >= 0:
                os.close(st.fd)
            if st is not None and st.preserver is not None:
                st.preserver.close()
            for tp, offset in first.items():
                if self.topic(key[0]) == tp.topic and tp in self._owned:
                    consumer.seek(tp, offset)
                    if pause_s > 0:
                        self._pause_for(consumer, tp, pause_s)
                    tps.append(tp)
        return tps

    def _resume(self, tp: TopicPartition) -> None:
        """Resume after a young event aged (or an I/O retry's wait), unless a hold stopped the
        partition meanwhile or a rebalance took it away."""
        self._timers.pop(tp, None)
        if tp not in self._held_tps and tp in self._owned and self._consumer is not None:
            with contextlib.suppress(Exception):  # unassigned meanwhile: nothing to resume
                self._consumer.resume(tp)

    def _remember_marker(self, rec: dict[str, Any], partition: int, offset: int) -> None:
        key = (rec["group"], rec["body"][1]["id"])
        self.markers.setdefault(key, {})[rec["volume"]] = (rec["seq"], partition, offset)
        while len(self.markers) > MARKERS_REMEMBERED:
            del self.markers[next(iter(self.markers))]

    def _hold(
        self, tp: TopicPartition, st: VolumeState, group: str, volume: str, checkpoint_id: str
    ) -> None:
        self._held_tps.setdefault(tp, set()).add((group, volume))
        metrics.HELD.labels(group, volume).set(1)
        if st.held_at != checkpoint_id:
            st.held_at = checkpoint_id
            log.warning(
                "replica held at a kept checkpoint; nothing after it is applied until it is released",
                group=group,
                volume=volume,
                checkpoint=checkpoint_id,
                seq=st.pos.seq,
                release=f"tapstream checkpoint release {group} {checkpoint_id}",
            )

    def _on_keep_change(self, req: TagRequest, kept: bool) -> None:
        """A checkpoint became kept or released (called by the control topic follower)."""
        markers = self.markers.get((req.group, req.checkpoint_id), {})
        if kept:
            for volume, (seq, partition, offset) in markers.items():
                st = self.volumes.get((req.group, volume))
                if st is None or st.held_at == req.checkpoint_id:
                    continue
                if st.pos.seq > seq:
                    log.warning(
                        "kept checkpoint was already applied to the replica: it cannot be kept; restore "
                        "it while the journal still holds it, or keep a newer one",
                        group=req.group,
                        volume=volume,
                        checkpoint=req.checkpoint_id,
                        marker_seq=seq,
                        replica_seq=st.pos.seq,
                        tag=req.tag,
                        sender=req.sender,
                    )
                elif st.pos.seq == seq and self._consumer is not None:
                    # The replica stands on the marker: read it again, so the hold engages there.
                    tp = TopicPartition(self.topic(req.group), partition)
                    if tp in self._owned:
                        with contextlib.suppress(Exception):  # unassigned meanwhile
                            self._consumer.seek(tp, offset)
            if not markers and self.holds.caught_up.is_set():
                log.info(
                    "checkpoint kept: the replica will stop at its marker (if it has passed it already, "
                    "this VDSA cannot tell since it did not read that marker)",
                    group=req.group,
                    checkpoint=req.checkpoint_id,
                    tag=req.tag,
                    sender=req.sender,
                )
            return
        for (group, volume), st in self.volumes.items():
            if group != req.group or st.held_at != req.checkpoint_id:
                continue
            st.held_at = None
            metrics.HELD.labels(group, volume).set(0)
            log.warning(
                "kept checkpoint released; the replica moves on",
                group=group,
                volume=volume,
                checkpoint=req.checkpoint_id,
                sender=req.sender,
            )
            for tp, held in list(self._held_tps.items()):
                held.discard((group, volume))
                if not held:
                    del self._held_tps[tp]
                    self._resume(tp)

    def _persist(
        self, touched: set[tuple[str, str]]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Apply each touched volume's pending records, fdatasync, save the position: all under the
        replica's lock. Returns the volumes that failed with an I/O error (e.g. ENOSPC), and those
        whose replica moved on without this process (another VDSA owns them now: nothing written)."""
        failed: set[tuple[str, str]] = set()
        stale: set[tuple[str, str]] = set()
        for key in touched:
            st = self.volumes[key]
            records, st.pending = st.pending, []
            partition = st.pos.partition if st.pos.partition >= 0 else st.part[1] if st.part else -1
            try:
                with st.replica.lock():
                    on_disk = st.replica.position().seq
                    if on_disk != st.saved_seq:
                        raise StaleReplica(on_disk)
                    for rec in records:
                        self._apply(st, rec)
                    os.fdatasync(st.fd)
                    st.replica.save_position(
                        Position(
                            st.cursor.seq,
                            partition,
                            st.pos.offset,
                            st.pos.ts,
                            list(st.cursor.open_syncs),
                            st.cursor.halt,
                        )
                    )
                    st.saved_seq = st.cursor.seq
            except StaleReplica as exc:
                log.warning(
                    "the replica moved on without this process (another VDSA applies the volume): "
                    "what this process read of it is dropped, the replica's position stands",
                    group=key[0],
                    volume=key[1],
                    saved_seq=exc.args[0],
                    expected_seq=st.saved_seq,
                    dropped=len(records),
                )
                stale.add(key)
            except OSError as exc:
                self._io_failed(key[0], key[1], exc, "writing the replica")
                failed.add(key)
            else:
                if key in self._io_failing:
                    self._io_failing.discard(key)
                    metrics.IO_FAILING.labels(key[0], key[1]).set(0)
                    log.warning(
                        "replica writes work again; the volume applies from its saved position",
                        group=key[0],
                        volume=key[1],
                        seq=st.cursor.seq,
                    )
        return failed, stale

    def _io_failed(self, group: str, volume: str, exc: OSError, doing: str) -> None:
        """Say that a volume's replica cannot be written (ENOSPC, EIO): it stays at its saved
        position and is retried every `vdsa_retry_io_s`; the other volumes go on."""
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        log.error(
            "replica write failed; the volume stays at its saved position and is retried",
            group=group,
            volume=volume,
            doing=doing,
            path=str(Replica(self.s.replica_dir, group, volume).image),
            error=exc.strerror or repr(exc),
            errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            retry_in_s=self.s.vdsa_retry_io_s,
            hint="the replica's filesystem is full: free space under TAPSTREAM_REPLICA_DIR"
            if full
            else None,
        )
        metrics.IO_ERRORS.labels(group, volume).inc()
        metrics.IO_FAILING.labels(group, volume).set(1)
        self._io_failing.add((group, volume))

    def _apply(self, st: VolumeState, rec: dict[str, Any]) -> None:
        branch, body = rec["body"]
        if st.preserver is not None:
            st.preserver.before(st.fd, branch, body)  # under the replica's lock, as views expect
        apply_body(st.fd, rec["body"], verify=False)  # the cursor verified it
        if branch == "Checkpoint" and body.get("volume_size"):
            if os.fstat(st.fd).st_size < body["volume_size"]:
                os.ftruncate(st.fd, body["volume_size"])
        metrics.APPLIED.labels(rec["group"], rec["volume"]).inc()

    async def _publish_progress(self) -> None:
        assert self._producer is not None
        now = now_us()
        for (group, volume), st in self.volumes.items():
            halt = st.cursor.halt
            if halt is not None and self.halts is not None:
                self.halts.still_halted(group, volume, halt)
            rpo = max(0.0, (now - st.newest_ts) / 1e6) if st.newest_ts else 0.0
            value = self.codec.encode(
                "Progress",
                {
                    "group": group,
                    "volume": volume,
                    "site": "recovery",
                    "source": ProgressSource.VDSA,
                    "applied_seq": st.pos.seq,
                    "applied_ts": st.pos.ts,
                    "applied_offset": st.pos.offset,
                    "newest_seq_seen": st.newest_seq,
                    "rpo_seconds": rpo,
                    "lag_records": max(0, st.newest_seq - st.pos.seq),
                    "ts": now,
                    "halted": f"{halt['reason']}: {halt['detail']}" if halt else None,
                },
            )
            metrics.APPLIED_SEQ.labels(group, volume).set(st.pos.seq)
            self._producer.produce_nowait(self.s.topic("progress"), value, key=volume.encode())


class _Rebalance(ConsumerRebalanceListener):
    """The consumer group's callbacks; aiokafka awaits them (revocations everywhere before any
    assignment)."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.applier._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.applier._on_assigned(set(assigned))


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)

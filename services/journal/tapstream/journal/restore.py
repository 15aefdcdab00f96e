"""Restore: materialise a volume at a checkpoint from the replica plus the journal.

1. Find the checkpoint (id, tag or latest) and its marker seq for the volume.
2. Under the replica's lock, copy the replica image and read its applied position.
3. Ask the index for the events after that position up to the marker; keep only those not wholly
   overwritten later (plan.needed); fetch them from Kafka by offset; verify each checksum; apply.
The output is written as FILE.partial and renamed only when complete: no half-written FILE, ever.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from confluent_kafka import TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.durable import fsync_dir
from tapstream.core.kafka import sync_consumer
from tapstream.core.replay import StreamError, apply_body
from tapstream.core.replica import Position, Replica
from tapstream.core.settings import TapstreamSettings
from tapstream.journal.plan import Span, needed
from tapstream.journal.store import JournalStore


class RestoreError(RuntimeError):
    """The restore cannot be done as asked; the message says why and what to do instead."""


@dataclass
class RestoreResult:
    checkpoint_id: str
    tag: str | None
    path: Path
    size: int
    replica_seq: int
    marker_seq: int
    events_in_window: int
    events_applied: int
    bytes_from_journal: int


Progress = Callable[[int, int], None]  # (done, total) in events


@dataclass
class Window:
    """What lies between the replica and a checkpoint: the events a restore or a view must add."""

    checkpoint: dict[str, Any]
    position: Position
    rows: list[Any]
    spans: list[Span]  # the events not wholly overwritten later (plan.needed), in seq order
    topic: str


async def window(
    store: JournalStore,
    settings: TapstreamSettings,
    group: str,
    volume: str,
    checkpoint: str,
    under_lock: Callable[[Replica], None],
) -> Window:
    """Find `checkpoint`, call `under_lock` under the replica's lock where its position is read (to
    copy the replica, or to open a preserve session at that position), then check that the journal
    holds every event between them. RestoreError says why not and what to do."""
    cp = await store.find_checkpoint(group, volume, checkpoint)
    if cp is None:
        known = await store.volumes(group)
        if volume not in known:
            raise RestoreError(
                f"unknown volume {volume!r} in group {group!r}; volumes with "
                f"checkpoints: {', '.join(known) or 'none'}"
            )
        raise RestoreError(
            f"no checkpoint {checkpoint!r} for {group}/{volume}; list them with "
            f"`tapstream checkpoint list {group}`"
        )
    replica = Replica(settings.replica_dir, group, volume)
    with replica.lock():
        pos = replica.position()
        if pos.seq > cp["seq"]:
            raise RestoreError(
                f"checkpoint {cp['id']} is outside the journal window: the replica already applied "
                f"seq {pos.seq} > {cp['seq']}. Pick a newer checkpoint (`tapstream checkpoint list {group}`)"
            )
        under_lock(replica)
    rows = await store.events_between(group, volume, pos.seq, cp["seq"])
    expected = cp["seq"] - pos.seq
    if pos.halt is not None:
        raise RestoreError(
            f"the replica of {group}/{volume} is halted at seq {pos.seq} ({pos.halt['reason']}: "
            f"{pos.halt['detail']}); checkpoint {cp['id']} lies after it. Restore a checkpoint at "
            f"or before seq {pos.seq}, or heal it first: `tapstream volume resync {group} {volume}`"
        )
    if len(rows) != expected:
        missing = _missing(pos.seq, cp["seq"], [r["seq"] for r in rows])
        raise RestoreError(
            f"the journal holds {len(rows)} of the {expected} events between the replica (seq {pos.seq}) "
            f"and checkpoint {cp['id']} (seq {cp['seq']}); missing: {missing}. If the journal is "
            "catching up, retry shortly (`tapstream status`); if they were lost upstream, the "
            "replica halts there and a resync heals it (`tapstream volume resync "
            f"{group} {volume}`): pick a checkpoint before seq {pos.seq + 1} meanwhile"
        )
    spans = needed(Span(r["seq"], r["off"], r["len"], r["kpartition"], r["koffset"]) for r in rows)
    topic = rows[0]["topic"] if rows else settings.mirrored(settings.topic(f"writes.{group}"))
    return Window(dict(cp), pos, list(rows), spans, topic)


async def restore(
    settings: TapstreamSettings,
    group: str,
    volume: str,
    checkpoint: str,
    out: Path,
    progress: Progress | None = None,
) -> RestoreResult:
    store = JournalStore(settings.recovery_database_url.get_secret_value())
    await store.start()
    partial = out.with_name(out.name + ".partial")

    def copy(replica: Replica) -> None:
        if replica.image.exists():
            _copy(replica.image, partial)
        else:
            partial.unlink(missing_ok=True)
            partial.touch()

    try:
        w = await window(store, settings, group, volume, checkpoint, copy)
        cp = w.checkpoint
        applied, journal_bytes = apply_from_kafka(
            settings, w.topic, w.spans, partial, cp["volume_size"], progress
        )
        return RestoreResult(
            cp["id"],
            cp["tag"],
            out,
            cp["volume_size"],
            w.position.seq,
            cp["seq"],
            len(w.rows),
            applied,
            journal_bytes,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        await store.stop()


def _missing(after: int, upto: int, have: list[int], shown: int = 3) -> str:
    """The first missing seq ranges in (after, upto], e.g. "41-44, 50"."""
    ranges: list[str] = []
    want, have_set = after + 1, set(have)
    while want <= upto and len(ranges) < shown:
        if want in have_set:
            want += 1
            continue
        end = want
        while end + 1 <= upto and end + 1 not in have_set:
            end += 1
        ranges.append(f"{want}-{end}" if end > want else str(want))
        want = end + 1
    return ", ".join(ranges) + (", ..." if want <= upto and len(ranges) == shown else "")


def _copy(src: Path, dst: Path) -> None:
    """Sparse-friendly copy (copy_file_range lets the filesystem share or skip holes)."""
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        size = os.fstat(fsrc.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fsrc.fileno(), fdst.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except OSError:
            fsrc.seek(0)
            fdst.seek(0)
            shutil.copyfileobj(fsrc, fdst, 8 << 20)


def apply_from_kafka(
    settings: TapstreamSettings,
    topic: str,
    spans: list[Span],
    image: Path,
    size: int,
    progress: Progress | None,
    durable: bool = True,
) -> tuple[int, int]:
    """Fetch `spans` from Kafka and apply them to `image`; durable: fsync it and rename FILE.partial
    to FILE (a restore). Not durable: a scratch file a crash throws away (a checkpoint view's)."""
    codec = make_codec(settings)
    consumer = sync_consumer(
        settings,
        group_id="tapstream-restore",
        bootstrap=settings.recovery_bootstrap,
        options={
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 64 << 20,
            "queued.max.messages.kbytes": 256 * 1024,
        },
    )
    fd = os.open(image, os.O_RDWR)
    applied = nbytes = 0
    try:
        if size and os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        # A volume's events share one partition (keyed by volume), so offset order is seq order:
        # fetch and apply in one pass, holding one record at a time.
        partitions = {s.kpartition for s in spans}
        if len(partitions) > 1:
            raise RestoreError(
                f"events of one volume span partitions {sorted(partitions)} of {topic}"
            )
        offsets = [s.koffset for s in spans]
        by_offset = {s.koffset: s for s in spans}
        partition = spans[0].kpartition if spans else 0
        i = 0
        while i < len(offsets):
            consumer.assign([TopicPartition(topic, partition, offsets[i])])
            while i < len(offsets):
                msg = consumer.poll(10)
                if msg is None:
                    raise RestoreError(
                        f"Kafka gave no record at {topic}[{partition}]@{offsets[i]} in 10 s; "
                        "is the recovery cluster up and the record still retained?"
                    )
                if msg.error():
                    raise RestoreError(f"reading {topic}[{partition}]: {msg.error()}")
                # A record without error has an offset; the write topic carries no tombstones.
                off = cast(int, msg.offset())
                if off > offsets[i]:
                    raise RestoreError(
                        f"record {topic}[{partition}]@{offsets[i]} is gone (retention?)"
                    )
                if off < offsets[i]:
                    continue
                span = by_offset[off]
                _, rec = codec.decode(cast(bytes, msg.value()))
                if rec["seq"] != span.seq:
                    raise RestoreError(f"index and topic disagree at {topic}[{partition}]@{off}")
                try:
                    apply_body(fd, rec["body"])
                except StreamError as exc:
                    raise RestoreError(
                        f"journal event seq {span.seq} failed verification: {exc}"
                    ) from None
                applied += 1
                nbytes += len(rec["body"][1].get("data", b""))
                if progress:
                    progress(applied, len(spans))
                i += 1
                # A long gap to the next wanted offset: seek instead of reading through it.
                if i < len(offsets) and offsets[i] - off > 64:
                    break
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
        consumer.close()
    if durable:
        os.replace(image, image.with_name(image.name.removesuffix(".partial")))
        fsync_dir(image.parent)  # the restored image's name survives a crash too
    return applied, nbytes

"""One volume's event stream on Kafka: gap-free seq, chunked Write events, checksums, delivery state.

`publish*` allocate the next seq and hand the record to the producer synchronously, so events enter
the partition in the order the tapper applied them to the volume. Every delivery report comes back
through `_delivered`, which tracks the highest acked seq, what is still outstanding, and reports a
refused event to the export (which then recovers the stream: DESIGN §4, "never lose an acked write").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import crc32c
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tapstream.core.codec import Codec, DecodeError
from tapstream.core.codec.fast_write import DataEncoder
from tapstream.core.durable import atomic_write
from tapstream.core.kafka import AsyncProducer
from tapstream.core.kafka.producer import publish_error
from tapstream.core.logging import get_logger
from tapstream.tapper import metrics

if TYPE_CHECKING:
    from tapstream.tapper.volume import Volume

_log = get_logger("tapstream.tapper.publish")
Done = Callable[[bool], None]  # called once per event: True when Kafka acked it


def now_us() -> int:
    return time.time_ns() // 1000


class LaneHooks:
    """What the compiled path's stream (native.py) adds to a VolumeStream. On the asyncio path the
    event loop is the only writer, so there is nothing to exclude, expire or collect: no-ops, which
    the unit tests' stream doubles inherit too."""

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield

    def fast_pending(self) -> int:
        return 0

    def expire(self) -> list[tuple[int, int]]:
        return []

    def take_written(self) -> list[int]:
        return []

    def set_flag(self, name: str, on: bool) -> None:
        """`name`: fenced, disk_failed, zeroing (the export's states that close the lane), ahead
        or queued (async mode's, modes.py)."""

    def set_held(self, held: bool) -> None:
        pass

    def publish_block(
        self, volume: Volume, offset: int, length: int, done: Done, sync_id: str, skip_zero: bool
    ) -> bool:
        """A sync block: the volume's `length` bytes at `offset` (at most a chunk) as a SyncBlock,
        with no write between the read and its seq. False, nothing sent, when `skip_zero` and they
        are all zeroes. The compiled path reads them straight into the event under its lock."""
        with self.exclusive():
            data = volume.read(offset, length)
            if skip_zero and data.count(0) == len(data):
                return False
            cast(Any, self).publish_data(offset, data, done, sync_id=sync_id)  # every stream has it
        return True

    def flag(self, name: str) -> bool:
        """Whether the lane has `name` set (the compiled path may set ahead itself)."""
        return False

    def observe_latencies(self) -> None:
        pass


def event_record(
    volume: str, seq: int, ts: int, host: str, group: str, branch: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A DiskEvent record for the generic codec path (events other than Write/SyncBlock)."""
    return {
        "volume": volume,
        "seq": seq,
        "ts": ts,
        "host": host,
        "group": group,
        "body": (branch, body),
    }


class VolumeStream(LaneHooks):
    def __init__(
        self,
        volume: str,
        group: str,
        topic: str,
        host: str,
        producer: AsyncProducer,
        codec: Codec,
        last_seq: int,
        chunk_bytes: int,
        mode: str,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.volume = volume
        self.group = group
        self.topic = topic
        self.host = host
        self.key = volume.encode()
        self.seq = last_seq
        self.acked_seq = last_seq
        self.outstanding = 0
        self.outstanding_bytes = (
            0  # the backlog: encoded bytes handed to the producer, not yet acked
        )
        self.healthy = True
        self._first_failed = 0  # the lowest seq Kafka refused since the recovery last looked
        # perf_counter of a send no later than the oldest unacked event's (deliveries come in
        # order): `lag_s` is an upper bound of how far Kafka is behind, at one float per event
        self._oldest_sent = 0.0
        self.chunk_bytes = chunk_bytes
        self._producer = producer
        self._codec = codec
        # Write and SyncBlock events skip the generic path (fast_write.py); it refuses at start a
        # codec whose DiskEvent it does not write byte for byte.
        self._data = DataEncoder.learn(codec.encode, volume, host, group)
        self._on_failure = on_failure
        self._idle: list[asyncio.Future[None]] = []
        self._below: list[tuple[int, asyncio.Future[None]]] = []
        self._latency = metrics.PUBLISH_LATENCY.labels(mode)
        self._errors = metrics.PUBLISH_ERRORS.labels(volume)

    def publish(
        self, branch: str, body: dict[str, Any], done: Done | None = None
    ) -> asyncio.Future[Any]:
        """An event other than Write/SyncBlock (Zero, Flush, Checkpoint, SyncStart, SyncEnd)."""
        self.seq += 1
        record = event_record(self.volume, self.seq, now_us(), self.host, self.group, branch, body)
        return self._send(self._codec.encode("DiskEvent", record), done)

    def publish_data(
        self,
        offset: int,
        data: bytes | memoryview,
        done: Done | None = None,
        sync_id: str | None = None,
    ) -> int:
        """One Write (or, with `sync_id`, SyncBlock) per chunk of `data`; `done` runs once per chunk.
        Returns the number of events."""
        n, step = len(data), self.chunk_bytes
        encode = self._data.encode
        if n <= step:
            self.seq += 1
            self._send_data(
                encode(self.seq, now_us(), offset, data, crc32c.crc32c(data), sync_id), done
            )
            return 1
        view = memoryview(data)
        count = 0
        for start in range(0, n, step):
            chunk = view[start : start + step]
            self.seq += 1
            self._send_data(
                encode(self.seq, now_us(), offset + start, chunk, crc32c.crc32c(chunk), sync_id),
                done,
            )
            count += 1
        return count

    def _send(self, value: bytes, done: Done | None) -> asyncio.Future[Any]:
        """A rare event (Zero, Flush, markers, syncs' ends): the caller may await its future.
        Its ack is handled in the same delivery callbacks as the writes', so in stream order: a
        future's callbacks would run a loop turn later, and a Write acked in the same batch as the
        Zero before it was then answered first (CI saw it) and moved the oldest-sent mark back."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        seq, size, t0 = self.seq, len(value), time.perf_counter()

        def then(err: KafkaError | None) -> None:
            exc = None if err is None else publish_error(err)
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
            self._settled(seq, size, t0, done, exc)

        try:
            self._producer.produce_then(self.topic, value, self.key, then)
        except Exception:
            self.seq -= 1  # never sent: the next event takes this seq, so the stream has no gap
            raise
        self._sent(size, t0)
        return fut

    def _send_data(self, value: bytes, done: Done | None) -> None:
        """A Write or SyncBlock: the hot path, a plain callback per record and no future."""
        t0 = time.perf_counter()
        try:
            self._producer.produce_then(
                self.topic,
                value,
                self.key,
                partial(self._delivered, self.seq, len(value), t0, done),
            )
        except Exception:
            self.seq -= 1  # never sent: the next event takes this seq, so the stream has no gap
            raise
        self._sent(len(value), t0)

    def _sent(self, size: int, t0: float) -> None:
        if not self.outstanding:
            self._oldest_sent = t0
        self.outstanding += 1
        self.outstanding_bytes += size

    def _delivered(
        self, seq: int, size: int, t0: float, done: Done | None, err: KafkaError | None
    ) -> None:
        self._settled(seq, size, t0, done, None if err is None else publish_error(err))

    def _settled(
        self, seq: int, size: int, t0: float, done: Done | None, exc: BaseException | None
    ) -> None:
        self.outstanding -= 1
        self.outstanding_bytes -= size
        self._oldest_sent = t0
        ok = exc is None
        if ok:
            if seq > self.acked_seq:
                self.acked_seq = seq
            self._latency.observe(time.perf_counter() - t0)
        else:
            self._errors.inc()
            if not self._first_failed or seq < self._first_failed:
                self._first_failed = seq
        if done is not None:
            done(ok)
        if exc is not None:
            self._on_failure(exc)
        if self._below:
            self._wake_below()
        if not self.outstanding and self._idle:
            idle, self._idle = self._idle, []
            for waiter in idle:
                if not waiter.done():
                    waiter.set_result(None)

    def _wake_below(self) -> None:
        keep = []
        for limit, waiter in self._below:
            if self.outstanding_bytes < limit:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((limit, waiter))
        self._below = keep

    def lag_s(self, now: float) -> float:
        """At most how long the oldest event not yet acked has waited (0 when none waits);
        `now` is a time.perf_counter()."""
        return now - self._oldest_sent if self.outstanding else 0.0

    async def backlog_below(self, limit: int) -> None:
        """Return once less than `limit` bytes of events wait for Kafka's ack."""
        if self.outstanding_bytes >= limit:
            waiter = asyncio.get_running_loop().create_future()
            self._below.append((limit, waiter))
            await waiter

    async def settled(self) -> None:
        """Return once every event published so far has been acked or refused."""
        if self.outstanding:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter

    def restart_at(self, seq: int) -> None:
        """Continue after `seq` (the last of this volume's events Kafka holds), after a failure."""
        self.seq = self.acked_seq = seq

    def take_first_failed(self) -> int:
        """The lowest seq Kafka refused since the last call (0: none). Events sent after it may
        have landed all the same: the recovery checks the stream for a hole (export.py)."""
        seq, self._first_failed = self._first_failed, 0
        return seq


class Countdown:
    """Calls `done(all_ok)` once `n` events have each reported."""

    __slots__ = ("done", "left", "ok")

    def __init__(self, n: int, done: Done) -> None:
        self.left, self.ok, self.done = n, True, done

    def __call__(self, ok: bool) -> None:
        self.ok = self.ok and ok
        self.left -= 1
        if not self.left:
            self.done(self.ok)


def last_seq(
    conf: dict[str, Any],
    topic: str,
    volume: str,
    codec: Codec,
    window: int = 64,
    timeout: float = 10.0,
) -> int:
    """The highest seq of `volume` in `topic` (0 if none): a restarted tapper continues after it.

    Reads each partition backwards in windows from its end until it finds one of the volume's events.
    Raises TimeoutError if Kafka does not answer.
    """
    return max(_scan_back(conf, topic, volume, codec, bool, window, timeout), default=0)


def seqs_since(
    conf: dict[str, Any],
    topic: str,
    volume: str,
    codec: Codec,
    since: int,
    window: int = 256,
    timeout: float = 10.0,
) -> set[int]:
    """The seqs of `volume` in `topic` from `since` on (read backwards from the end until an
    older one): the recovery's check that no event is missing after a refused one."""
    seqs = _scan_back(
        conf, topic, volume, codec, lambda found: min(found, default=since) < since, window, timeout
    )
    return {s for s in seqs if s >= since}


def _scan_back(
    conf: dict[str, Any],
    topic: str,
    volume: str,
    codec: Codec,
    enough: Callable[[list[int]], bool],
    window: int,
    timeout: float,
) -> list[int]:
    """The volume's seqs, each partition read backwards in windows from its end until a window's
    seqs are `enough`. Raises TimeoutError if Kafka does not answer."""
    key = volume.encode()
    consumer = Consumer(
        {
            **conf,
            "group.id": f"tapstream-tapper-seq-{volume}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    seqs: list[int] = []
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except Exception as exc:
            raise TimeoutError(f"Kafka did not list {topic}: {exc}") from None
        if meta is None or meta.error is not None:
            return []
        for p in meta.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p), timeout)
            end = high
            while end > low:
                start = max(low, end - window)
                consumer.assign([TopicPartition(topic, p, start)])
                found: list[int] = []
                pos = start
                while pos < end:
                    msg = consumer.poll(timeout)
                    if msg is None:
                        raise TimeoutError(f"reading {topic}[{p}] at {pos} timed out")
                    if err := msg.error():
                        if err.code() == -191:  # partition EOF
                            break
                        raise RuntimeError(str(err))
                    # A record without error has an offset; our topics carry no tombstones.
                    pos = cast(int, msg.offset()) + 1
                    if msg.key() == key and pos <= end:
                        try:
                            _, rec = codec.decode(cast(bytes, msg.value()))
                        except DecodeError:
                            continue
                        found.append(rec["seq"])
                seqs.extend(found)
                if enough(found):
                    break
                end = start
    finally:
        consumer.close()
    return seqs


# A topic created a moment ago may not have elected its partitions' leaders yet.
_NOT_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """(low, high) of a partition, retried while its leader is being elected, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(0.5, deadline - time.monotonic())
            )
            return int(low), int(high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code not in _NOT_YET or time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Kafka gave no offsets for {tp.topic}[{tp.partition}]: {exc}"
                ) from None
            time.sleep(0.1)  # back off between retries of a leader election, not a readiness guess


def continue_after(kafka_seq: int, acked_seq: int) -> tuple[int, bool]:
    """Where a volume's sequence goes on after a start or a Kafka failure, and whether the whole
    volume must be resent. Kafka behind what it acknowledged (RF=1 and a lost disk, an unclean
    leader election, a recreated topic, retention) lost events: never reuse their seqs (a consumer
    that applied them would skip the new events as redeliveries); leave the gap, which makes every
    consumer halt, and resend everything, which heals them."""
    if acked_seq > kafka_seq:
        return acked_seq, True
    return kafka_seq, False


class SeqFile:
    """The last acked seq of a volume, kept locally as a floor: if the topic lost the volume's events
    (retention, a recreated topic), the sequence still never goes back (consumers skip old seqs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0  # writes failed in a row

    def read(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["acked_seq"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self.path} is corrupt ({exc}); remove it to start from Kafka's seq"
            ) from None

    def write(self, seq: int) -> bool:
        """Save `seq` (temp file, fsync, rename, fsync the directory). Never raises an OSError: a
        full state dir leaves the older floor in place, which is still a valid floor (the sequence
        only grows), so the volume goes on; the failure is logged once, and again when it heals."""
        try:
            atomic_write(self.path, json.dumps({"acked_seq": seq, "ts": now_us()}))
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                _log.error(
                    "cannot save the volume's acked seq; the volume goes on, the saved floor stays "
                    "older until this works again",
                    path=str(self.path),
                    error=exc.strerror or repr(exc),
                    hint=(
                        "the tapper's state dir (TAPSTREAM_TAPPER_STATE_DIR) is full: free space there"
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                        else None
                    ),
                )
            return False
        if self.failures:
            _log.warning(
                "the volume's acked seq is saved again", path=str(self.path), failures=self.failures
            )
            self.failures = 0
        return True

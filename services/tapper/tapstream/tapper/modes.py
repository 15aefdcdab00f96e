"""The two write paths (DESIGN §4), each read top to bottom: request -> local write -> event(s) ->
publish -> reply.

Requests are handed over with a `reply(error, message)` callback instead of as coroutines: the hot
path allocates no task, and the local write plus the seq allocation run synchronously, in arrival
order, so the event stream keeps the order in which writes reached the volume.

- `SyncMode`: the reply waits for Kafka's ack of every event of the request (EIO if Kafka refuses or
  does not ack within the publish timeout). FLUSH and FUA also wait for fdatasync of the volume.
- `AsyncMode`: the reply follows the local write. The request's regions are marked in the dirty
  bitmap first; when that sets a new bit, the request waits (in order, with every later request)
  for one batched msync of the bitmap, so a crash can never forget a region whose event is missing.
  When Kafka falls behind (more than `backlog_bytes` unacked), the volume goes *ahead*: writes only
  mark the bitmap, and once the backlog drained a catch-up sends the marked regions' current content
  as a DELTA sync (DRBD's "pull-ahead"): memory stays bounded and the client never waits for Kafka;
  the stream is not crash-consistent until the catch-up ends, so no checkpoint is cut meanwhile.

Both modes: a local write, zero or fdatasync that fails marks its regions dirty and fails the
volume (`Export.io_failed`, local_health.py): writes and flushes get its error until a probe shows
the disk works again, then the regions go out as a DELTA sync.

A mode is given the parts it writes to (volume, stream, bitmap) and a `Host`: the few things of its
export it calls back (export.py implements it; this module does not import the export). The hot
path allocates no closure: a request's step goes to `Host.when_clear` as a method and its arguments.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.protocol.constants import Err
from tapstream.tapper.protocol.errors import Reply
from tapstream.tapper.publish import Countdown, VolumeStream
from tapstream.tapper.volume import Volume

log = get_logger("tapstream.tapper.modes")


class Host(Protocol):
    """What a mode needs of its export besides the volume, the stream and the bitmap."""

    name: str

    @property
    def disk_failed(self) -> bool: ...

    def refuse_if_failed(self, reply: Reply) -> bool: ...

    def when_clear(
        self, offset: int, end: int, reply: Reply, run: Callable[..., None], *args: Any
    ) -> None: ...

    def zero_locally(
        self,
        offset: int,
        length: int,
        punch: bool,
        then: Callable[[OSError | None], None],
        reply: Reply,
    ) -> None: ...

    def durable_locally(self, reply: Reply, bitmap: bool = False) -> None: ...

    def wrote(self, offset: int, length: int) -> None: ...

    def io_failed(self, op: str, exc: OSError, offset: int, length: int) -> tuple[int, str]: ...

    def refused(self, offset: int, length: int) -> None: ...

    def timed_out(self, offset: int, length: int) -> None: ...

    async def sync_regions(self, kind: str, ranges: list[tuple[int, int]]) -> int: ...


class WriteMode(Protocol):
    """One of the two write paths, as the export drives it."""

    name: str
    ahead: bool  # async mode only: Kafka is behind, writes only mark the bitmap (no checkpoint)

    def write(self, offset: int, data: bytes, fua: bool, reply: Reply) -> None: ...

    def zero(
        self, offset: int, length: int, trim: bool, punch: bool, fua: bool, reply: Reply
    ) -> None: ...

    def flush(self, reply: Reply) -> None: ...

    def stream_healthy(self) -> None: ...

    def watchdog(self, now: float) -> None: ...

    def in_flight(self) -> int: ...

    def rpo_s(self, now: float) -> float: ...


class _Pending:
    """A sync-mode request waiting for its events' acks; answered exactly once (ack, refusal or
    timeout). It is also the events' delivery callback, so a write allocates no closure for it."""

    __slots__ = ("answered", "deadline", "fua", "length", "mode", "offset", "reply")

    def __init__(
        self, mode: SyncMode, reply: Reply, deadline: float, fua: bool, offset: int, length: int
    ) -> None:
        self.mode, self.reply, self.deadline, self.fua = mode, reply, deadline, fua
        self.offset, self.length = offset, length
        self.answered = False

    def __call__(self, ok: bool) -> None:
        self.mode.acked(self, ok)


class SyncMode:
    name = "sync"
    ahead = False  # the reply waits for Kafka: it is never behind

    def __init__(self, host: Host, volume: Volume, stream: VolumeStream, timeout_s: float) -> None:
        self.host, self.volume, self.stream = host, volume, stream
        self.timeout_s = timeout_s
        self._pending: deque[_Pending] = deque()  # in publish order, so deadlines ascend
        self._waiting: deque[tuple[float, Callable[[], None], Reply]] = (
            deque()
        )  # arrived while recovering

    # --- requests --------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, fua: bool, reply: Reply) -> None:
        if self.host.refuse_if_failed(reply):
            return
        if not self.stream.healthy:
            self._wait_for_stream(partial(self.write, offset, data, fua, reply), reply)
            return
        self.host.when_clear(
            offset, offset + len(data), reply, self._write, offset, data, fua, reply
        )

    def _write(self, offset: int, data: bytes, fua: bool, reply: Reply) -> None:
        length = len(data)
        try:
            self.volume.write(offset, data)
        except OSError as exc:  # nothing published: the region is marked dirty instead
            reply(*self.host.io_failed("write", exc, offset, length))
            return
        self.host.wrote(offset, length)
        p = self._track(reply, fua, offset, length)
        stream = self.stream
        n = -(-length // stream.chunk_bytes)
        try:
            stream.publish_data(offset, data, p if n == 1 else Countdown(n, p))
        except Exception:
            self._unpublished(p)
            raise

    def zero(
        self, offset: int, length: int, trim: bool, punch: bool, fua: bool, reply: Reply
    ) -> None:
        host = self.host
        if host.refuse_if_failed(reply):
            return
        if not self.stream.healthy:
            self._wait_for_stream(
                partial(self.zero, offset, length, trim, punch, fua, reply), reply
            )
            return

        def zeroed(exc: OSError | None) -> None:
            if exc is not None:
                reply(*host.io_failed("zero", exc, offset, length))
                return
            host.wrote(offset, length)
            p = self._track(reply, fua, offset, length)
            try:
                self.stream.publish("Zero", {"offset": offset, "length": length, "trim": trim}, p)
            except Exception:
                self._unpublished(p)
                raise

        host.when_clear(
            offset, offset + length, reply, host.zero_locally, offset, length, punch, zeroed, reply
        )

    def flush(self, reply: Reply) -> None:
        """Durable locally (fdatasync) and in Kafka (the Flush event, after every earlier one, is acked)."""
        if self.host.refuse_if_failed(reply):
            return
        if not self.stream.healthy:
            self._wait_for_stream(partial(self.flush, reply), reply)
            return
        p = self._track(reply, True, 0, 0)
        try:
            self.stream.publish("Flush", {"fua": False}, p)
        except Exception:
            self._unpublished(p)
            raise

    # --- completion ------------------------------------------------------------------------------
    def _track(self, reply: Reply, fua: bool, offset: int, length: int) -> _Pending:
        p = _Pending(self, reply, time.monotonic() + self.timeout_s, fua, offset, length)
        self._pending.append(p)
        return p

    def _unpublished(self, p: _Pending) -> None:
        """The producer refused the event outright (the caller answers with the exception)."""
        p.answered = True
        self.host.refused(p.offset, p.length)

    def acked(self, p: _Pending, ok: bool) -> None:
        if not ok:
            self.host.refused(p.offset, p.length)
        if p.answered:
            return  # already failed by the watchdog
        p.answered = True
        if not ok:
            p.reply(Err.EIO, "Kafka refused the event")
        elif p.fua:
            self.host.durable_locally(p.reply)
        else:
            p.reply(0, "")

    def _wait_for_stream(self, retry: Callable[[], None], reply: Reply) -> None:
        """The stream is recovering from a Kafka failure: run `retry` once it is healthy again, or
        answer EIO at the deadline without touching the volume."""
        self._waiting.append((time.monotonic() + self.timeout_s, retry, reply))

    def stream_healthy(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        for _deadline, retry, _reply in waiting:
            retry()

    def watchdog(self, now: float) -> None:
        """Fail requests whose events Kafka has not acked within the publish timeout (EIO)."""
        for offset, length in self.stream.expire():  # the compiled path's (answered EIO there)
            self.host.timed_out(offset, length)
        pending = self._pending
        while pending and (pending[0].answered or pending[0].deadline <= now):
            p = pending.popleft()
            if not p.answered:
                p.answered = True
                self.host.timed_out(p.offset, p.length)
                p.reply(Err.EIO, f"Kafka did not acknowledge the event within {self.timeout_s:g} s")
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            _deadline, _retry, reply = waiting.popleft()
            reply(Err.EIO, f"Kafka is unreachable (no ack within {self.timeout_s:g} s)")

    def in_flight(self) -> int:
        return (
            sum(1 for p in self._pending if not p.answered)
            + len(self._waiting)
            + self.stream.fast_pending()
        )

    def rpo_s(self, now: float) -> float:
        """No acknowledged write is missing from Kafka: only unanswered ones wait."""
        return self.stream.lag_s(now)


class AsyncMode:
    name = "async"

    def __init__(
        self,
        host: Host,
        volume: Volume,
        stream: VolumeStream,
        bitmap: DirtyBitmap,
        backlog_bytes: int,
    ) -> None:
        self.host, self.volume, self.stream, self.bitmap = host, volume, stream, bitmap
        self.backlog_bytes = backlog_bytes
        self._ahead = False
        self._ahead_since = 0.0  # perf_counter when the volume last went ahead
        # requests waiting for the bitmap's msync (or behind an overlapping one), in order
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._syncing = False
        self._catching_up: asyncio.Task[None] | None = None

    @property
    def ahead(self) -> bool:
        """Also while the compiled path went ahead on its own and the loop has not heard yet: a
        checkpoint must not be cut then (Export.consistent)."""
        return self._ahead or self.stream.flag("ahead")

    @ahead.setter
    def ahead(self, on: bool) -> None:
        self._ahead = on
        self.stream.set_flag("ahead", on)  # the compiled path's writes then only mark the bitmap

    # --- requests --------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, fua: bool, reply: Reply) -> None:
        if self.host.refuse_if_failed(reply):
            return
        end = offset + len(data)
        regions, wait = self.bitmap.mark(offset, len(data))
        if wait or (self._queue and self._overlaps(offset, end)):
            self._hold(offset, end, reply, self._write, offset, data, regions, fua, reply)
        else:
            self.host.when_clear(offset, end, reply, self._write, offset, data, regions, fua, reply)

    def _write(self, offset: int, data: bytes, regions: range, fua: bool, reply: Reply) -> None:
        if self.host.disk_failed:  # admitted before the volume failed: refuse it now
            self._refuse(regions, reply)
            return
        try:
            self.volume.write(offset, data)
            self.host.wrote(offset, len(data))
            stream = self.stream
            if stream.healthy and not self.ahead:
                n = -(-len(data) // stream.chunk_bytes)
                settle = self._settler(regions)
                stream.publish_data(offset, data, settle if n == 1 else Countdown(n, settle))
                if stream.outstanding_bytes > self.backlog_bytes:
                    self.go_ahead()
            else:
                self.bitmap.fail(regions)  # stays dirty: a catch-up (or the recovery) sends it
            if fua:
                self.host.durable_locally(reply)
            else:
                reply(0, "")
        except OSError as exc:
            self._failed("write", exc, offset, len(data), regions, reply)

    def zero(
        self, offset: int, length: int, trim: bool, punch: bool, fua: bool, reply: Reply
    ) -> None:
        if self.host.refuse_if_failed(reply):
            return
        end = offset + length
        regions, wait = self.bitmap.mark(offset, length)
        args = (offset, length, trim, punch, regions, fua, reply)
        if wait or (self._queue and self._overlaps(offset, end)):
            self._hold(offset, end, reply, self._zero, *args)
        else:
            self.host.when_clear(offset, end, reply, self._zero, *args)

    def _zero(
        self,
        offset: int,
        length: int,
        trim: bool,
        punch: bool,
        regions: range,
        fua: bool,
        reply: Reply,
    ) -> None:
        host = self.host
        if host.disk_failed:  # admitted before the volume failed: refuse it now
            self._refuse(regions, reply)
            return

        def zeroed(exc: OSError | None) -> None:
            if exc is not None:
                self.bitmap.fail(regions)  # the bits stay: resent once the volume works again
                reply(*host.io_failed("zero", exc, offset, length))
                return
            host.wrote(offset, length)
            if self.stream.healthy and not self.ahead:
                self.stream.publish(
                    "Zero",
                    {"offset": offset, "length": length, "trim": trim},
                    self._settler(regions),
                )
            else:
                self.bitmap.fail(regions)
            if fua:
                host.durable_locally(reply)
            else:
                reply(0, "")

        try:
            host.zero_locally(offset, length, punch, zeroed, reply)
        except OSError as exc:
            self._failed("zero", exc, offset, length, regions, reply)

    def _refuse(self, regions: range, reply: Reply) -> None:
        self.bitmap.fail(regions)
        self.host.refuse_if_failed(reply)

    def _failed(
        self, op: str, exc: OSError, offset: int, length: int, regions: range, reply: Reply
    ) -> None:
        self.bitmap.fail(regions)  # the bits stay: resent once the volume works again
        reply(*self.host.io_failed(op, exc, offset, length))

    def flush(self, reply: Reply) -> None:
        """Durable locally (volume and bitmap); the Flush event goes to Kafka in the background."""

        def run() -> None:
            if self.host.refuse_if_failed(reply):
                return
            if self.stream.healthy and not self.ahead:
                self.stream.publish("Flush", {"fua": False})
            self.host.durable_locally(reply, bitmap=True)

        if self._queue:
            self._queue.append((0, 0, run))  # after the requests that are waiting for the bitmap
        else:
            run()

    # --- ordering around the bitmap's msync -------------------------------------------------------
    def _settler(self, regions: range) -> Callable[[bool], None]:
        return partial(_settle, self.bitmap, regions)

    def _hold(
        self, offset: int, end: int, reply: Reply, run: Callable[..., None], *args: Any
    ) -> None:
        """Queue `run(*args)` until the bitmap's msync covers its bits (overlapping writes keep
        their order; others may pass, as concurrent requests may); it still waits for a zeroing
        it overlaps (zeroing.py)."""
        self._queue.append(
            (offset, end, partial(self.host.when_clear, offset, end, reply, run, *args))
        )
        self.stream.set_flag("queued", True)  # the compiled path's writes follow these in order
        if not self._syncing:
            self._syncing = True
            asyncio.get_running_loop().create_task(self._sync_bitmap())

    def _overlaps(self, offset: int, end: int) -> bool:
        return any(a < end and offset < b for a, b, _ in self._queue)

    async def _sync_bitmap(self) -> None:
        """Group commit: one msync covers every bit set before it started."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                n = len(self._queue)
                if self.bitmap.begin_sync():
                    t0 = time.perf_counter()
                    try:
                        await loop.run_in_executor(None, self.bitmap.sync)
                    except OSError as exc:
                        # The dirty marks cannot be made durable, so these writes may not be
                        # acknowledged: fail the volume (what waited is refused just below) until
                        # a probe finds its disks working.
                        self.host.io_failed("bitmap", exc, 0, 0)
                    finally:
                        self.bitmap.end_sync()
                    metrics.BITMAP_SYNC.observe(time.perf_counter() - t0)
                else:
                    n = len(self._queue)  # nothing left to make durable: everything queued may run
                batch = self._queue[:n]
                del self._queue[:n]
                with self.stream.exclusive():  # no compiled-path write between these
                    for _, _, run in batch:
                        run()
                    if not self._queue:
                        self.stream.set_flag("queued", False)
        finally:
            self._syncing = False
            if not self._queue:
                self.stream.set_flag("queued", False)

    # --- falling behind and catching up ---------------------------------------------------------
    def go_ahead(self) -> None:
        if not self._ahead:
            self.ahead = True
            self._ahead_since = time.perf_counter()
            metrics.AHEAD.labels(self.host.name).set(1)
            log.warning(
                "kafka is behind: writes only mark the dirty bitmap until it catches up",
                volume=self.host.name,
                backlog_bytes=self.stream.outstanding_bytes,
            )
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        stream = self.stream
        while True:
            await stream.backlog_below(self.backlog_bytes // 4)
            if not stream.healthy:
                return  # the recovery resends the dirty regions itself
            ranges = self.bitmap.dirty_ranges(only_orphans=True)
            # Writes stream again only once what is left to resend fits in one backlog: while a
            # writer outruns Kafka, streaming its writes too would only send twice what the
            # catch-up sends anyway, and cost the writer the producer's CPU; ahead, rewrites of a
            # region coalesce in the bitmap and go out once per pass (RPO: the pass's length).
            if sum(b - a for a, b in ranges) <= self.backlog_bytes:
                self.ahead = False
            if not ranges:
                break
            await self.host.sync_regions("DELTA", ranges)
            if not self.ahead and stream.healthy and not self.bitmap.orphans():
                break
        metrics.AHEAD.labels(self.host.name).set(0)
        log.info("caught up with kafka", volume=self.host.name, seq=stream.seq)

    def stream_healthy(self) -> None:
        pass

    def watchdog(self, now: float) -> None:
        pass

    def in_flight(self) -> int:
        return len(self._queue)

    def rpo_s(self, now: float) -> float:
        """Acknowledged writes not yet in Kafka: those behind the oldest unacked event, and, while
        ahead or catching up, every write since the volume went ahead."""
        lag = self.stream.lag_s(now)
        if self._catching_up is not None and not self._catching_up.done():
            return max(lag, now - self._ahead_since)
        return lag


def _settle(bitmap: DirtyBitmap, regions: range, ok: bool) -> None:
    """An async-mode event's delivery: its regions are clean once acked, else stay dirty."""
    if ok:
        bitmap.release(regions)
    else:
        bitmap.fail(regions)

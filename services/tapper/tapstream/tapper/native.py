"""The compiled data path (`services/tapper/native`, Rust: PyO3 + rdkafka).

Negotiation stays in Python (server.py); once a plain connection picked an export, its socket
goes to the compiled path, whose threads serve READs and plain WRITEs (no flag, up to one event)
themselves: parse, pwrite, encode (the bytes of fast_write.py), produce with librdkafka, and reply
(sync: once Kafka acked; async: at once, the event drains behind), with no Python per request.
An async write takes the compiled path only when its dirty-bitmap bits are set and durable already
(the bitmap lives in the core, `NativeDirtyBitmap`, shared with the Python path); a write that
sets a new bit goes to the Python path, which marks it and waits for the batched msync (modes.py). Everything else (FLUSH, TRIM, WRITE_ZEROES, FUA, long
writes, and every write while the volume is not in its plain state) comes back here in arrival
order and runs through the same `run_request` as the asyncio server, under the lane's hold, so
the local write and its event stay one step for the stream's order.

The lane (one per export) owns the stream's seq and delivery accounting; `NativeVolumeStream`
is the VolumeStream the modes and the export see, so markers, syncs, Zero and Flush events take
their seq from the same lock and leave through the same producer as the compiled path's Writes.
What closes the compiled path for a volume, and when (flags set by the Python side):
- UNHEALTHY: a refused event (set by the lane itself at once) until the stream's recovery ends;
- FENCED, DISK_FAILED, ZEROING: the export's fence, local health and large zeroing;
- the hold: while the Python path runs a request or sends a sync block;
- QUEUED (async): requests wait for the bitmap's msync, so later writes follow them in order.
AHEAD (async) does not close it: writes then only mark the bitmap, as AsyncMode's; the lane sets it
itself when its backlog passes the limit, and reports it so the Python side starts the catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tapstream.core.codec import Codec
from tapstream.core.codec.fast_write import DataEncoder
from tapstream.core.kafka.exceptions import PublishError
from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.protocol.constants import Cmd
from tapstream.tapper.protocol.frames import Request
from tapstream.tapper.publish import Done, event_record

if TYPE_CHECKING:
    from tapstream.tapper.export import Export
    from tapstream.tapper.server import Limits, NbdServer
    from tapstream.tapper.volume import Volume

try:
    import tapstream_native as _rs
except ImportError:  # not built (no Rust toolchain): the Python path serves every export
    _rs = None

log = get_logger("tapstream.tapper.native")

OPS = {int(c): c.name.lower() for c in Cmd}
# the export's states that close a lane to writes (export.py sets them by name)
_FLAGS = (
    {
        "fenced": _rs.FENCED,
        "disk_failed": _rs.DISK_FAILED,
        "zeroing": _rs.ZEROING,
        "ahead": _rs.AHEAD,
        "queued": _rs.QUEUED,
    }
    if _rs is not None
    else {}
)


def available() -> bool:
    return _rs is not None


def librdkafka_conf(conf: dict[str, Any]) -> list[tuple[str, str]]:
    """confluent-kafka's config dict as librdkafka's strings (booleans as true/false)."""
    out = []
    for key, value in conf.items():
        if callable(value):
            raise ValueError(f"the compiled path takes no callbacks in its producer config ({key})")
        out.append((key, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return out


class NativeCore:
    """The compiled core of one tapper: its producer, its lanes and connections, and the reader
    of what the threads hand back to the event loop."""

    def __init__(
        self, producer_conf: dict[str, Any], async_conf: dict[str, Any] | None = None
    ) -> None:
        if _rs is None:
            raise RuntimeError(
                "the compiled data path is not built: run `make setup` (needs cargo), or set "
                "TAPSTREAM_TAPPER_NATIVE=off"
            )
        self.rs = _rs.NativeCore(
            librdkafka_conf(producer_conf),
            None if async_conf is None else librdkafka_conf(async_conf),
        )
        self.streams: dict[int, NativeVolumeStream] = {}
        self.conns: dict[int, NativeConnection] = {}
        self.server: NbdServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        from tapstream.tapper import server

        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.rs.eventfd(), self._drain)
        # the in-flight gauge counts the compiled path's requests too
        metrics.INFLIGHT.set_function(
            lambda: server._INFLIGHT[0] + sum(c.rs.inflight for c in list(self.conns.values()))
        )

    def attach_server(self, server: NbdServer) -> None:
        self.server = server

    def serves(self, export: Export) -> bool:
        return isinstance(export.stream, NativeVolumeStream) and export.stream.core is self

    def adopt(
        self,
        export: Export,
        counted: str | None,
        structured: bool,
        fd: int,
        first_out: bytes,
        first_in: bytes,
        limits: Limits,
    ) -> None:
        from tapstream.tapper.server import BLOCKS, MAX_INFLIGHT

        stream = export.stream
        assert isinstance(stream, NativeVolumeStream)
        rs_conn = self.rs.serve(
            stream.lane,
            fd,
            structured,
            MAX_INFLIGHT,
            limits.inflight_bytes,
            BLOCKS.maximum,
            first_out,
            first_in,
        )
        conn = NativeConnection(self, export, counted, rs_conn)
        self.conns[rs_conn.id] = conn
        log.info("connection served by the compiled data path", volume=export.name, conn=rs_conn.id)
        if self.server is not None:
            self.server.connections.add(conn)

    def _drain(self) -> None:
        for ev in self.rs.drain():
            try:
                kind = ev[0]
                if kind == "req":
                    _, conn_id, flags, typ, handle, offset, length, payload = ev
                    conn = self.conns.get(conn_id)
                    if conn is not None:
                        conn.run(Request(flags, typ, handle, offset, length), payload)
                elif kind == "py":
                    self.streams[ev[1]].settled_py(ev[2], ev[3])
                elif kind == "refused":
                    self.streams[ev[1]].fast_refused(ev[2], ev[3], ev[4])
                elif kind == "wake":
                    self.streams[ev[1]].wake()
                elif kind == "ahead":
                    self.streams[ev[1]].on_ahead()
                elif kind == "closed":
                    conn = self.conns.pop(ev[1], None)
                    if conn is not None:
                        conn.closed(ev[2])
            except Exception:
                log.exception("handling the compiled path's report failed", report=ev[:2])

    def housekeeping(self) -> None:
        for conn in list(self.conns.values()):
            conn.publish_counts()
        for stream in self.streams.values():
            stream.observe_latencies()

    async def stop(self, timeout_s: float) -> int:
        """Wait for every event's report (handled here); returns how many never came."""
        left = await asyncio.to_thread(self.rs.flush, timeout_s)
        self._drain()
        for stream in self.streams.values():
            log.info(
                "compiled data path totals",
                volume=stream.volume,
                writes=int(stream.lane.fast_writes),
                seq=stream.seq,
            )
        if self._loop is not None:
            self._loop.remove_reader(self.rs.eventfd())
        return int(left)


class NativeDirtyBitmap(DirtyBitmap):
    """A DirtyBitmap whose bits and counts live in the compiled core (same file, same API), so
    an async lane marks and settles regions under the same lock as the Python path."""

    def _attach(self, fd: int, nbytes: int) -> None:
        assert _rs is not None
        self.rs = _rs.NativeBitmap(
            fd, nbytes, self.bits, self.granule, self._per_extent * self.granule, self._ahead
        )

    def mark(self, offset: int, length: int, resend: bool = False) -> tuple[range, bool]:
        start, stop, wait = self.rs.mark(offset, length, resend)
        return range(start, stop), wait

    def begin_sync(self) -> bool:
        return bool(self.rs.begin_sync())

    def end_sync(self) -> None:
        self.rs.end_sync()

    def release(self, regions: range) -> None:
        self.rs.release(regions.start, regions.stop)

    def fail(self, regions: range) -> None:
        self.rs.fail(regions.start, regions.stop)

    def set_dirty(self, offset: int, length: int) -> None:
        self.rs.set_dirty(offset, length)

    def sweep(self, cool_s: float = 0.0) -> int:
        return int(self.rs.sweep(cool_s))

    def dirty(self) -> list[int]:
        return list(self.rs.dirty())

    def orphans(self) -> list[int]:
        return list(self.rs.orphans())

    def dirty_bytes(self) -> int:
        return int(self.rs.dirty_bits()) * self.granule

    def _msync(self) -> None:
        self.rs.sync()

    def close(self) -> None:
        self.rs.close()


class NativeVolumeStream:
    """An export's VolumeStream whose seq, backlog and acks live in the compiled lane."""

    def __init__(
        self,
        core: NativeCore,
        volume: str,
        group: str,
        topic: str,
        host: str,
        codec: Codec,
        last_seq: int,
        chunk_bytes: int,
        mode: str,
        on_failure: Callable[[BaseException], None],
        *,
        fd: int,
        size: int,
        granule: int,
        timeout_s: float,
        bitmap: NativeDirtyBitmap | None = None,
        backlog_bytes: int = 0,
    ) -> None:
        self.core = core
        self.volume, self.group, self.topic, self.host = volume, group, topic, host
        self.key = volume.encode()
        self.chunk_bytes = chunk_bytes
        self._codec = codec
        enc = DataEncoder.learn(codec.encode, volume, host, group)
        self.lane = core.rs.lane(
            topic,
            self.key,
            enc._head,
            enc._write,
            enc._sync_block,
            fd,
            size,
            chunk_bytes,
            granule,
            timeout_s,
            last_seq,
            None if bitmap is None else bitmap.rs,
            backlog_bytes,
        )
        core.streams[self.lane.id] = self
        self._on_failure = on_failure
        # ranges of the compiled path's refused writes go here (the export marks them dirty and
        # recovers the stream); until an export attaches, a refusal only fails the stream
        self.on_refused: Callable[[int, int], None] = lambda offset, length: on_failure(
            PublishError("event refused")
        )
        # async: the lane went ahead on its own (its backlog passed the limit); AsyncMode.go_ahead
        self.on_ahead: Callable[[], None] = lambda: None
        self._tokens: dict[int, tuple[Done | None, asyncio.Future[Any] | None]] = {}
        self._next_token = 0
        self._idle: list[asyncio.Future[None]] = []
        self._below: list[tuple[int, asyncio.Future[None]]] = []
        self._latency = metrics.PUBLISH_LATENCY.labels(mode)
        self._errors = metrics.PUBLISH_ERRORS.labels(volume)

    # --- the VolumeStream face -------------------------------------------------------------------
    @property
    def seq(self) -> int:
        return int(self.lane.seq)

    @property
    def acked_seq(self) -> int:
        return int(self.lane.acked_seq)

    @property
    def outstanding(self) -> int:
        return int(self.lane.outstanding)

    @property
    def outstanding_bytes(self) -> int:
        return int(self.lane.outstanding_bytes)

    @property
    def healthy(self) -> bool:
        return not self.lane.flags & _rs.UNHEALTHY

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.lane.set_flag(_rs.UNHEALTHY, not value)

    def _token(self, done: Done | None, fut: asyncio.Future[Any] | None) -> int:
        self._next_token += 1
        self._tokens[self._next_token] = (done, fut)
        return self._next_token

    def publish(
        self, branch: str, body: dict[str, Any], done: Done | None = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        token = self._token(done, fut)

        def encode(seq: int, ts: int) -> bytes:
            record = event_record(self.volume, seq, ts, self.host, self.group, branch, body)
            return self._codec.encode("DiskEvent", record)

        try:
            self.lane.publish(encode, token)
        except Exception:
            del self._tokens[token]
            raise
        return fut

    def publish_data(
        self,
        offset: int,
        data: bytes | memoryview,
        done: Done | None = None,
        sync_id: str | None = None,
    ) -> int:
        n, step = len(data), self.chunk_bytes
        if n <= step and isinstance(data, bytes):
            chunks = [data]
        else:  # the lane takes bytes: one copy per chunk of a long write
            view = memoryview(data)
            chunks = [bytes(view[start : start + step]) for start in range(0, max(n, 1), step)]
        count = 0
        for i, chunk in enumerate(chunks):
            token = self._token(done, None)
            try:
                self.lane.publish_data(offset + i * step, chunk, token, sync_id)
            except Exception:
                del self._tokens[token]
                raise
            count += 1
        return count

    def publish_block(
        self, volume: Volume, offset: int, length: int, done: Done, sync_id: str, skip_zero: bool
    ) -> bool:
        """As LaneHooks.publish_block, but read straight into the event under the lane's lock (no
        hold: the compiled path's writes wait for the lock instead of going to the Python path)."""
        token = self._token(done, None)
        try:
            seq = self.lane.publish_block(offset, length, token, sync_id, skip_zero)
        except BaseException:
            del self._tokens[token]
            raise
        if seq is None:
            del self._tokens[token]
            return False
        return True

    def lag_s(self, now: float) -> float:
        return float(self.lane.lag_s())

    async def backlog_below(self, limit: int) -> None:
        if self.outstanding_bytes >= limit:
            waiter = asyncio.get_running_loop().create_future()
            self._below.append((limit, waiter))
            self.lane.watch_below(limit)
            await waiter

    async def settled(self) -> None:
        if self.outstanding:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            self.lane.watch_below(1)
            await waiter

    def restart_at(self, seq: int) -> None:
        self.lane.restart_at(seq)

    def take_first_failed(self) -> int:
        return int(self.lane.take_first_failed())

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The Python path touches the volume: the compiled path forwards writes meanwhile."""
        self.lane.hold()
        try:
            yield
        finally:
            self.lane.release()

    def fast_pending(self) -> int:
        return int(self.lane.fast_inflight)

    def expire(self) -> list[tuple[int, int]]:
        return list(self.lane.expire())

    def take_written(self) -> list[int]:
        return list(self.lane.take_written())

    def set_flag(self, name: str, on: bool) -> None:
        self.lane.set_flag(_FLAGS[name], on)

    def set_held(self, held: bool) -> None:
        self.lane.set_held(held)

    def flag(self, name: str) -> bool:
        return bool(self.lane.flags & _FLAGS[name])

    # --- reports from the lane -------------------------------------------------------------------
    def settled_py(self, token: int, error: str | None) -> None:
        done, fut = self._tokens.pop(token, (None, None))
        exc = None if error is None else PublishError(error)
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        if exc is not None:
            self._errors.inc()
        if done is not None:
            done(exc is None)
        if exc is not None:
            self._on_failure(exc)
        self.wake()

    def fast_refused(self, offset: int, length: int, error: str) -> None:
        """The compiled path's Write was refused (already answered EIO, unless it timed out)."""
        self._errors.inc()
        log.error("kafka refused a write's event", volume=self.volume, offset=offset, error=error)
        self.on_refused(offset, length)  # the export marks it dirty and recovers the stream

    def wake(self) -> None:
        outstanding, nbytes = self.outstanding, self.outstanding_bytes
        if self._idle and not outstanding:
            idle, self._idle = self._idle, []
            for waiter in idle:
                if not waiter.done():
                    waiter.set_result(None)
        if self._below:
            keep = []
            for limit, waiter in self._below:
                if nbytes < limit:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    keep.append((limit, waiter))
            self._below = keep
        for limit, _ in self._below:
            self.lane.watch_below(limit)
        if self._idle:
            self.lane.watch_below(1)

    def observe_latencies(self) -> None:
        observe = self._latency.observe
        for seconds in self.lane.take_latencies():
            observe(seconds)


class NativeConnection:
    """The Python side of a connection the compiled path serves: runs what it forwards, sends
    the replies back through it, and does the connection's accounting when it ends."""

    def __init__(self, core: NativeCore, export: Export, counted: str | None, rs_conn: Any) -> None:
        self.core, self.export, self.counted, self.rs = core, export, counted, rs_conn
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counters: dict[tuple[int, str], Any] = {}

    def run(self, req: Request, payload: bytes) -> None:
        from tapstream.tapper.server import run_request

        stream = self.export.stream
        assert isinstance(stream, NativeVolumeStream)
        try:
            with stream.exclusive():
                run_request(self.export, req, payload, False, self._answer)
        finally:
            if req.type != Cmd.READ:
                stream.lane.slow_done()  # later writes may take the compiled path again

    def _answer(
        self,
        handle: int,
        typ: int,
        nbytes: int,
        error: int,
        message: str,
        data: bytes | None = None,
        offset: int = 0,
    ) -> None:
        self.export.gate.send_or_defer(
            self.rs.reply, handle, typ, nbytes, int(error), message, data, offset
        )

    def publish_counts(self) -> None:
        for op, failed, n, nbytes in self.rs.take_tally():
            key = (op, "error" if failed else "ok")
            counters = self._counters.get(key)
            if counters is None:
                name = self.export.name
                counters = self._counters[key] = (
                    metrics.REQUESTS.labels(name, OPS.get(op, "unknown"), key[1]),
                    metrics.BYTES.labels(name, OPS.get(op, "unknown")),
                )
            counters[0].inc(n)
            if nbytes:
                counters[1].inc(nbytes)

    def closed(self, reason: str) -> None:
        self.publish_counts()
        if reason:
            log.warning("closing connection", volume=self.export.name, reason=reason)
        server = self.core.server
        if server is not None:
            server.connections.discard(self)
            if self.counted is not None:
                server.per_export[self.counted] -= 1
                metrics.CONNECTIONS.labels(self.counted).dec()
                self.counted = None
        if not self._closed.done():
            self._closed.set_result(None)

    async def shutdown(self) -> None:
        """Take no more requests, finish the ones in flight, then close (SIGTERM)."""
        self.rs.shutdown()
        await self._closed

"""The NBD server: an asyncio protocol per connection (TCP or Unix socket), several exports.

Bytes go to the pure `Negotiation` until the client picks an export, then requests are parsed in
place from the receive buffer and handed to the export synchronously, in arrival order (modes.py).
Replies are gathered and written once per event-loop turn. A bad request gets its NBD error and the
connection goes on; garbage closes only its own connection; a connection whose client went away
still finishes its requests (their events are in the stream), it just drops the replies.

TLS: when the negotiation ACKs NBD_OPT_STARTTLS, the ACK goes out in plain text, reading stops (the
client's ClientHello must reach the TLS layer, not the option parser) and loop.start_tls upgrades the
transport in place; negotiation then starts again over TLS. Unix sockets never offer TLS: the
socket file's owner and mode decide who connects.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.export import Export
from tapstream.tapper.protocol import frames
from tapstream.tapper.protocol.constants import (
    CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE,
    TF_CAN_MULTI_CONN,
    TF_HAS_FLAGS,
    TF_SEND_FLUSH,
    TF_SEND_FUA,
    TF_SEND_TRIM,
    TF_SEND_WRITE_ZEROES,
    Cmd,
    Err,
)
from tapstream.tapper.protocol.errors import os_error
from tapstream.tapper.protocol.frames import REQUEST, ProtocolError, Request, parse_request
from tapstream.tapper.protocol.handshake import BlockSizes, ExportInfo, Negotiation, TlsMode
from tapstream.tapper.protocol.transmission import check_request
from tapstream.tapper.tls import TlsCredentials

if TYPE_CHECKING:
    from tapstream.tapper.native import NativeCore

log = get_logger("tapstream.tapper.server")

# Any byte range, like nbdkit's file plugin: fuse2fs and other userspace filesystems write small,
# unaligned metadata updates, and every event carries its exact byte range (4096 stays preferred).
BLOCKS = BlockSizes(minimum=1, preferred=4096, maximum=32 * 1024 * 1024)
# All connections to an export share one volume fd and one ordered event stream, and FLUSH syncs the
# file itself, so a flush on one connection covers writes completed on any: multi-conn is true.
TRANSMISSION_FLAGS = (
    TF_HAS_FLAGS
    | TF_SEND_FLUSH
    | TF_SEND_FUA
    | TF_SEND_TRIM
    | TF_SEND_WRITE_ZEROES
    | TF_CAN_MULTI_CONN
)
HEADER = REQUEST.size  # a request's fixed part (28 bytes)
MAX_INFLIGHT = 256  # requests per connection before we stop reading (back-pressure)
_INFLIGHT = [0]  # requests received and not answered, every connection: read when scraped
metrics.INFLIGHT.set_function(lambda: _INFLIGHT[0])
MAX_BUFFERED = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one client may take (TAPSTREAM_TAPPER_MAX_*): connections per export, bytes of READ
    and WRITE requests in flight per connection (reading stops until replies bring it down), and
    time to finish negotiating (a client that connects and says nothing holds no socket forever)."""

    connections_per_export: int = 16
    inflight_bytes: int = 64 * 1024 * 1024
    negotiation_timeout_s: float = 30.0


OPS = {int(c): c.name.lower() for c in Cmd}


def export_infos(exports: Mapping[str, Export]) -> dict[str, ExportInfo]:
    return {
        name: ExportInfo(
            name, e.volume.size, TRANSMISSION_FLAGS, f"tapstream volume {name} ({e.spec.mode})"
        )
        for name, e in exports.items()
    }


Answer = Callable[..., None]  # (handle, type, nbytes, error, message[, data, offset])


def run_request(
    export: Export, req: Request, payload: bytes, aligned: bool, answer: Answer
) -> None:
    """Check one request and hand it to its export; `answer` gets its reply exactly once. Shared by
    the asyncio connection and the compiled path's forwarded requests (native.py)."""
    flags, typ, handle, offset, length = req.flags, req.type, req.handle, req.offset, req.length
    error = check_request(req, export.volume.size, aligned, BLOCKS)
    if error:
        answer(
            handle, typ, 0 if typ not in (Cmd.READ, Cmd.WRITE) else length, error, "invalid request"
        )
        return
    reply = partial(answer, handle, typ, length)
    try:
        if typ == Cmd.WRITE:
            export.write(offset, payload, bool(flags & CMD_FLAG_FUA), reply)
        elif typ == Cmd.READ:
            answer(handle, typ, length, 0, "", export.read(offset, length), offset)
        elif typ == Cmd.FLUSH:
            export.flush(reply)
        elif typ == Cmd.TRIM:
            export.zero(offset, length, True, True, bool(flags & CMD_FLAG_FUA), reply)
        elif typ == Cmd.WRITE_ZEROES:
            export.zero(
                offset,
                length,
                False,
                not flags & CMD_FLAG_NO_HOLE,
                bool(flags & CMD_FLAG_FUA),
                reply,
            )
    except OSError as exc:
        log.error(
            "request failed",
            volume=export.name,
            op=OPS.get(typ),
            offset=offset,
            length=length,
            error=str(exc),
        )
        reply(os_error(exc), str(exc))
    except Exception as exc:
        log.exception(
            "request failed", volume=export.name, op=OPS.get(typ), offset=offset, length=length
        )
        reply(Err.EIO, repr(exc))


class NbdConnection(asyncio.Protocol):
    def __init__(self, server: NbdServer, tls: TlsMode = "off") -> None:
        self.exports = server.exports
        self.connections = server.connections
        self.per_export = server.per_export
        self.limits = server.limits
        self.t: asyncio.Transport | None = None
        self.peer = "?"
        self.buf = bytearray()
        self.neg: Negotiation | None = Negotiation(
            export_infos(self.exports), BLOCKS, tls, self._admit
        )
        self.creds = server.creds
        self.tls_timeout_s = server.tls_timeout_s
        self.native = server.native
        self.handed_over = False  # the compiled path serves this connection now
        self._upgrading: asyncio.Task[None] | None = None
        self._negotiation_timer: asyncio.TimerHandle | None = None
        self.inflight_bytes = 0  # of READ and WRITE requests not answered yet
        self._counted: str | None = None  # the export this connection counts against
        self.export: Export | None = None
        self.structured = False
        self.aligned = False
        self.skip = 0  # payload bytes of an oversize write still to discard
        self._skipped = 0  # that write's handle
        self.inflight = 0
        self.disconnecting = False  # DISC received or server stopping: take no more requests
        self.lost = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._read_paused = False
        self._write_paused = False
        self._idle: list[asyncio.Future[None]] = []
        self._counters: dict[tuple[int, str], Any] = {}
        # requests and bytes answered since the last reply flush, per (op, result): the Prometheus
        # counters (a mutex each) are bumped once per flush, not once per request
        self._tally: dict[tuple[int, str], list[int]] = {}

    # --- asyncio protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol's transport is a read/write one; uvloop's are not asyncio.Transport
        # subclasses, so this is a cast, not an isinstance check.
        self.t = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername") or "unix")
        self.connections.add(self)
        self._negotiation_timer = asyncio.get_running_loop().call_later(
            self.limits.negotiation_timeout_s, self._negotiation_expired
        )
        self.t.write(Negotiation.greeting())

    def _negotiation_expired(self) -> None:
        if self.neg is not None and not self.lost:
            log.warning("closing a connection that did not finish negotiating", peer=self.peer)
            self._close()

    def _admit(self, export: str) -> str | None:
        n = self.per_export[export]
        if n >= self.limits.connections_per_export:
            metrics.CONNECTIONS_REFUSED.labels(export).inc()
            return (
                f"export {export} already has {n} connections "
                "(TAPSTREAM_TAPPER_MAX_CONNECTIONS_PER_EXPORT)"
            )
        return None

    def data_received(self, data: bytes) -> None:
        if self.disconnecting:
            return
        self.buf += data
        try:
            self._process()
        except ProtocolError as exc:
            log.warning(
                "closing connection after a protocol violation", peer=self.peer, error=str(exc)
            )
            self._close()
        except Exception:
            log.exception("closing connection after an internal error", peer=self.peer)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed_over:
            return  # the compiled path owns the socket (a dup) and the connection's accounting
        self.lost = True
        self._out.clear()
        if not self.inflight:
            self._forget()

    def pause_writing(self) -> None:  # the client does not read its replies: stop taking requests
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- negotiation and request parsing ---------------------------------------------------------
    def _process(self) -> None:
        if self.neg is not None:
            if self.neg.starttls:  # upgrading: nothing may arrive here until TLS is up
                return
            out = self.neg.feed(self.buf)
            if out:
                self._queue(out)
            if self.neg.closed is not None:
                log.info("negotiation ended", peer=self.peer, reason=self.neg.closed)
                self._close()
                return
            if self.neg.starttls:
                self._start_tls()
                return
            if self.neg.agreed is None:
                return
            agreed = self.neg.agreed
            self.neg = None
            if self._negotiation_timer is not None:
                self._negotiation_timer.cancel()
            self.export = self.exports[agreed.export]
            self.per_export[agreed.export] += 1
            self._counted = agreed.export
            metrics.CONNECTIONS.labels(agreed.export).inc()
            self.structured, self.aligned = agreed.structured, agreed.aligned
            if self.native is not None and self._hand_over():
                return
        buf, pos, end = self.buf, 0, len(self.buf)
        try:
            while not self.disconnecting:
                if (
                    self.inflight_bytes >= self.limits.inflight_bytes
                    or self.inflight >= MAX_INFLIGHT
                ):
                    break  # the rest waits in the buffer until replies bring these down
                if self.skip:
                    n = min(self.skip, end - pos)
                    pos += n
                    self.skip -= n
                    if self.skip:
                        break
                    # answer only now: a client may not expect the reply before it sent the payload
                    self._answer(
                        self._skipped,
                        Cmd.WRITE,
                        0,
                        Err.EINVAL,
                        "write larger than the maximum payload",
                    )
                if end - pos < HEADER:
                    break
                req = parse_request(buf, pos)
                payload = b""
                if req.type == Cmd.WRITE:
                    length = req.length
                    if length > BLOCKS.maximum:  # read past its payload, then refuse
                        pos += HEADER
                        self.skip, self._skipped = length, req.handle
                        self._begin()
                        continue
                    if end - pos < HEADER + length:
                        break
                    payload = bytes(buf[pos + HEADER : pos + HEADER + length])
                    pos += HEADER + length
                else:
                    pos += HEADER
                self._dispatch(req, payload)
        finally:
            del buf[:pos]
        self._update_reading()

    def _dispatch(self, req: Request, payload: bytes) -> None:
        export = self.export
        assert export is not None
        if req.type == Cmd.DISC:
            self.disconnecting = True
            self._maybe_close()
            return
        self._begin()
        if req.type == Cmd.READ or req.type == Cmd.WRITE:
            self.inflight_bytes += req.length  # their replies (nbytes=length) give it back
        run_request(export, req, payload, self.aligned, self._answer)

    def _hand_over(self) -> bool:
        """Give a plain (not TLS) connection to a sync export to the compiled path (native.py):
        a dup of the socket, the replies not yet sent and the bytes already received; the asyncio
        transport is then dropped (closing it closes only its own fd)."""
        t, export, native = self.t, self.export, self.native
        if t is None or export is None or native is None or not native.serves(export):
            return False
        if t.get_extra_info("ssl_object") is not None or t.get_write_buffer_size():
            return False
        sock = t.get_extra_info("socket")
        if sock is None:
            return False
        fd = os.dup(sock.fileno())
        first_out = b"".join(self._out)
        self._out.clear()
        first_in = bytes(self.buf)
        self.buf.clear()
        self.handed_over = True
        t.pause_reading()
        self.connections.discard(self)
        if self._negotiation_timer is not None:
            self._negotiation_timer.cancel()
        counted, self._counted = self._counted, None  # the native connection gives it back
        native.adopt(export, counted, self.structured, fd, first_out, first_in, self.limits)
        t.abort()
        return True

    # --- TLS -------------------------------------------------------------------------------------
    def _start_tls(self) -> None:
        if self.buf:  # the client must wait for our ACK before its TLS handshake
            raise ProtocolError("data sent after NBD_OPT_STARTTLS before its reply")
        assert self.t is not None and self.creds is not None
        self._flush()  # the ACK, in plain text, ahead of the TLS records
        self.t.pause_reading()
        self._upgrading = asyncio.get_running_loop().create_task(self._upgrade(self.t))

    async def _upgrade(self, raw: asyncio.Transport) -> None:
        assert self.creds is not None and self.neg is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw,
                self,
                self.creds.context(),
                server_side=True,
                ssl_handshake_timeout=self.tls_timeout_s,
            )
            if tls is None:
                raise ConnectionError("connection closed during the TLS handshake")
        except Exception as exc:  # a bad or missing client certificate, a timeout, a reset...
            log.warning("TLS handshake failed", peer=self.peer, error=str(exc) or repr(exc))
            metrics.TLS_HANDSHAKES.labels("failed").inc()
            raw.close()
            # the TLS layer owned the transport: our connection_lost will not come by itself
            self.connection_lost(exc)
            return
        metrics.TLS_HANDSHAKES.labels("ok").inc()
        self.t = cast(asyncio.Transport, tls)
        self.neg.tls_started()
        cert = tls.get_extra_info("peercert") or {}
        log.info(
            "TLS on",
            peer=self.peer,
            version=tls.get_extra_info("ssl_object").version(),
            client=dict(x[0] for x in cert.get("subject", ())).get("commonName", ""),
        )
        if self.disconnecting:  # the server began stopping during the handshake
            self._close()
        elif self.buf:  # options that came over TLS before this task resumed
            self.data_received(b"")

    # --- replies ---------------------------------------------------------------------------------
    def _begin(self) -> None:
        self.inflight += 1
        _INFLIGHT[0] += 1

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
        """A request is done; its reply waits while a checkpoint holds the group's completions."""
        gate = self.export.gate if self.export is not None else None
        if gate is None:
            self._reply(handle, typ, nbytes, error, message, data, offset)
        else:
            gate.send_or_defer(self._reply, handle, typ, nbytes, error, message, data, offset)

    def _reply(
        self,
        handle: int,
        typ: int,
        nbytes: int,
        error: int,
        message: str,
        data: bytes | None,
        offset: int,
    ) -> None:
        self.inflight -= 1
        if typ == Cmd.READ or typ == Cmd.WRITE:
            self.inflight_bytes -= nbytes
        _INFLIGHT[0] -= 1
        self._count(typ, nbytes, error)
        if not self.lost:
            if error == 0 and typ == Cmd.READ:
                assert data is not None
                self._queue(
                    frames.structured_data(handle, offset, nbytes)
                    if self.structured
                    else frames.simple_reply(handle)
                )
                self._queue(data)
            elif error and typ == Cmd.READ and self.structured:
                self._queue(frames.structured_error(handle, error, message))
            else:
                self._queue(frames.simple_reply(handle, error))
        if (
            self._read_paused
            and self.inflight < MAX_INFLIGHT // 2
            and self.inflight_bytes <= self.limits.inflight_bytes // 2
        ):
            self._update_reading()
        if not self.inflight:
            if self.lost:
                self._forget()
            self._maybe_close()
            idle, self._idle = self._idle, []
            for waiter in idle:
                if not waiter.done():
                    waiter.set_result(None)

    def _count(self, typ: int, nbytes: int, error: int) -> None:
        key = (typ, "error" if error else "ok")
        t = self._tally.get(key)
        if t is None:
            t = self._tally[key] = [0, 0]
        t[0] += 1
        if not error and (typ == Cmd.READ or typ == Cmd.WRITE):
            t[1] += nbytes
        if not self._flush_scheduled:  # every reply is queued and flushed; a lost one may not be
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _publish_counts(self) -> None:
        tally, self._tally = self._tally, {}
        for key, (n, nbytes) in tally.items():
            counters = self._counters.get(key)
            if counters is None:
                name = self.export.name if self.export else "?"
                op = OPS.get(key[0], "unknown")
                counters = self._counters[key] = (
                    metrics.REQUESTS.labels(name, op, key[1]),
                    metrics.BYTES.labels(name, op),
                )
            counters[0].inc(n)
            if nbytes:
                counters[1].inc(nbytes)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._tally:
            self._publish_counts()
        out, self._out = self._out, []
        if out and self.t is not None and not self.lost and not self.t.is_closing():
            self.t.writelines(out)

    # --- flow control and closing ----------------------------------------------------------------
    def _update_reading(self) -> None:
        if self.t is None or self.lost:
            return
        want_pause = (
            self.inflight >= MAX_INFLIGHT
            or self.inflight_bytes >= self.limits.inflight_bytes
            or self._write_paused
            or len(self.buf) > MAX_BUFFERED
            or self.disconnecting
        )
        if want_pause and not self._read_paused:
            self._read_paused = True
            self.t.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            self.t.resume_reading()
            if self.buf:  # requests that arrived before the pause
                asyncio.get_running_loop().call_soon(self.data_received, b"")

    def _maybe_close(self) -> None:
        if self.disconnecting and not self.inflight:
            self._close()

    def _close(self) -> None:
        self.disconnecting = True
        if self.t is not None and not self.t.is_closing():
            self._flush()
            self.t.close()

    def _forget(self) -> None:
        self.connections.discard(self)
        if self._negotiation_timer is not None:
            self._negotiation_timer.cancel()
        if self._counted is not None:  # once, however many ways the connection ends
            self.per_export[self._counted] -= 1
            metrics.CONNECTIONS.labels(self._counted).dec()
            self._counted = None

    async def shutdown(self) -> None:
        """Take no more requests, finish the ones in flight, then close (SIGTERM)."""
        self.disconnecting = True
        self._update_reading()
        if self.inflight:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
        self._close()
        self._forget()


class NbdServer:
    """Listens on TCP and/or a Unix socket and serves `exports`; TLS (if set) on TCP only."""

    def __init__(
        self,
        exports: Mapping[str, Export],
        tls: TlsMode = "off",
        creds: TlsCredentials | None = None,
        tls_timeout_s: float = 10.0,
        limits: Limits = Limits(),
        native: NativeCore | None = None,
    ) -> None:
        if tls != "off" and creds is None:
            raise ValueError("TLS needs credentials")
        self.exports = exports
        self.tls, self.creds, self.tls_timeout_s = tls, creds, tls_timeout_s
        self.limits = limits
        self.native = native  # serves sync exports' connections after negotiation, if set
        if native is not None:
            native.attach_server(self)
        self.per_export: Counter[str] = Counter()  # connections in transmission, per export
        self.connections: set[Any] = set()  # NbdConnection, or native.NativeConnection
        self.servers: list[asyncio.AbstractServer] = []
        self.port: int | None = None

    def _tcp(self) -> NbdConnection:
        return NbdConnection(self, self.tls)

    def _unix(self) -> NbdConnection:
        return NbdConnection(self)

    async def listen_tcp(self, host: str, port: int) -> int:
        server = await asyncio.get_running_loop().create_server(
            self._tcp, host, port, reuse_address=True
        )
        self.servers.append(server)
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def listen_unix(self, path: str, mode: int = 0o600, owner: str = "") -> None:
        sock = bind_unix(path, mode, owner)
        self.servers.append(
            await asyncio.get_running_loop().create_unix_server(self._unix, sock=sock)
        )

    async def stop(self, grace_s: float = 60.0) -> None:
        for server in self.servers:
            server.close()
        if self.connections:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(c.shutdown()) for c in list(self.connections)],
                timeout=grace_s,
            )
            if pending:
                log.warning("connections still busy at shutdown", count=len(pending))


def bind_unix(path: str, mode: int, owner: str = "") -> socket.socket:
    """A listening Unix socket at `path` with `mode` and `owner` from its first instant: bound in a
    private directory beside `path`, given its mode and owner there, then renamed into place (a
    chmod after binding would leave a window in which anyone could connect)."""
    parent = os.path.dirname(os.path.abspath(path))
    private = tempfile.mkdtemp(prefix=".nbd-", dir=parent)  # 0700
    tmp = os.path.join(private, "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, mode)
        if owner:
            os.chown(tmp, *owner_ids(owner))
        os.replace(tmp, path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.rmdir(private)
    return sock


def owner_ids(owner: str) -> tuple[int, int]:
    """`user[:group]`, names or numbers, as os.chown's (uid, gid); -1 leaves one unchanged."""
    user, _, group = owner.partition(":")
    uid = -1 if not user else int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    gid = -1 if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid

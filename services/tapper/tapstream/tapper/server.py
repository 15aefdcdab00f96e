"""The NBD server: fixed newstyle negotiation, then transmission with concurrent requests.

Each request runs as its own task, started in arrival order; the part of a write that touches the
volume and allocates the event's seq runs before the task's first await, so the event stream keeps
the order in which writes reached the volume. Replies are single `write()` calls, so they never
interleave. A bad request gets its NBD error and the connection goes on; a broken handshake closes
only that connection.
"""

from __future__ import annotations

import asyncio
import errno
import struct
from collections.abc import Callable

from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.export import Export
from tapstream.tapper.protocol import frames
from tapstream.tapper.protocol.constants import (
    CLIENT_NO_ZEROES,
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
    Info,
    Opt,
    Rep,
)

log = get_logger("tapstream.tapper.server")

MIN_BLOCK = 512
PREFERRED_BLOCK = 4096
MAX_PAYLOAD = 32 * 1024 * 1024
# All connections of an export share one volume fd and one ordered event stream, and FLUSH syncs
# the file itself, so a flush on one connection covers writes completed on any: multi-conn is true.
TRANSMISSION_FLAGS = (TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM
                      | TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 exports: dict[str, Export], gate_wait: Callable[[Export], object] | None = None) -> None:
        self.r = reader
        self.w = writer
        self.exports = exports
        self.structured = False
        self.aligned = False  # the client learnt our block sizes, so we may enforce alignment
        self.export: Export | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # --- negotiation -----------------------------------------------------------------------------
    async def negotiate(self) -> bool:
        self.w.write(frames.server_greeting())
        (client_flags,) = struct.unpack(">I", await self.r.readexactly(4))
        no_zeroes = bool(client_flags & CLIENT_NO_ZEROES)
        while True:
            option, length = frames.parse_option_header(await self.r.readexactly(16))
            payload = await self.r.readexactly(length)
            if option == Opt.EXPORT_NAME:
                export = self.exports.get(payload.decode(errors="replace") or _default(self.exports))
                if export is None:
                    return False  # the protocol's only answer to an unknown name here is to close
                self.export = export
                self.w.write(frames.export_name_reply(export.volume.size, TRANSMISSION_FLAGS, no_zeroes))
                return True
            if option == Opt.ABORT:
                self.w.write(frames.option_reply(option, Rep.ACK))
                await self.w.drain()
                return False
            if option == Opt.LIST:
                if payload:
                    self.w.write(frames.option_reply(option, Rep.ERR_INVALID))
                    continue
                for name in self.exports:
                    self.w.write(frames.rep_server(option, name))
                self.w.write(frames.option_reply(option, Rep.ACK))
            elif option in (Opt.INFO, Opt.GO):
                try:
                    req = frames.parse_info_request(payload)
                except (ValueError, UnicodeDecodeError) as exc:
                    self.w.write(frames.option_reply(option, Rep.ERR_INVALID, str(exc).encode()))
                    continue
                export = self.exports.get(req.name or _default(self.exports))
                if export is None:
                    self.w.write(frames.option_reply(option, Rep.ERR_UNKNOWN, f"no export {req.name!r}".encode()))
                    continue
                if Info.NAME in req.infos:
                    self.w.write(frames.info_name(option, export.name))
                self.w.write(frames.info_block_size(option, MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD))
                self.w.write(frames.info_export(option, export.volume.size, TRANSMISSION_FLAGS))
                self.w.write(frames.option_reply(option, Rep.ACK))
                if option == Opt.GO:
                    self.export = export
                    self.aligned = Info.BLOCK_SIZE in req.infos
                    return True
            elif option == Opt.STRUCTURED_REPLY:
                if payload:
                    self.w.write(frames.option_reply(option, Rep.ERR_INVALID))
                else:
                    self.structured = True
                    self.w.write(frames.option_reply(option, Rep.ACK))
            elif option in (Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT):
                # No metadata contexts (base:allocation) yet: zero contexts, then ACK.
                rep = Rep.ACK if self.structured else Rep.ERR_INVALID
                self.w.write(frames.option_reply(option, rep))
            elif option == Opt.STARTTLS:
                self.w.write(frames.option_reply(option, Rep.ERR_POLICY, b"TLS is not available on this server yet"))
            else:
                self.w.write(frames.option_reply(option, Rep.ERR_UNSUP))
            await self.w.drain()

    # --- transmission ----------------------------------------------------------------------------
    async def transmit(self) -> None:
        assert self.export is not None
        export = self.export
        while True:
            req = frames.parse_request(await self.r.readexactly(28))
            if req.type == Cmd.DISC:
                break
            payload = b""
            if req.type == Cmd.WRITE:
                if req.length > MAX_PAYLOAD:
                    if req.length > 2 * MAX_PAYLOAD:
                        raise frames.ProtocolError(f"write payload of {req.length} bytes")
                    await self.r.readexactly(req.length)  # stay in sync, then refuse
                    self._reply_error(req.handle, Err.EINVAL, req.type, "write larger than 32 MiB")
                    continue
                payload = await self.r.readexactly(req.length)
            task = asyncio.create_task(self._handle(export, req, payload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            if len(self.tasks) > 512:  # bound memory: let some complete before reading more
                await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, export: Export, req: frames.Request, payload: bytes) -> None:
        op = _op_name(req.type)
        metrics.INFLIGHT.inc()
        try:
            error = self._check(export, req)
            if error:
                self._reply_error(req.handle, error, req.type, "invalid request")
                metrics.REQUESTS.labels(export.name, op, "invalid").inc()
                return
            data = b""
            try:
                if req.type == Cmd.READ:
                    data = export.read(req.offset, req.length)
                elif req.type == Cmd.WRITE:
                    await export.write(req.offset, payload, bool(req.flags & CMD_FLAG_FUA))
                elif req.type == Cmd.FLUSH:
                    await export.flush()
                elif req.type == Cmd.TRIM:
                    await export.zero(req.offset, req.length, trim=True, punch=True)
                elif req.type == Cmd.WRITE_ZEROES:
                    await export.zero(req.offset, req.length, trim=False,
                                      punch=not req.flags & CMD_FLAG_NO_HOLE)
                    if req.flags & CMD_FLAG_FUA:
                        await asyncio.to_thread(export.volume.sync)
                elif req.type == Cmd.CACHE:
                    pass
            except OSError as exc:
                code = Err.ENOSPC if exc.errno == errno.ENOSPC else Err.EIO
                log.error("request failed", volume=export.name, op=op, offset=req.offset,
                          length=req.length, error=str(exc))
                self._reply_error(req.handle, code, req.type, str(exc))
                metrics.REQUESTS.labels(export.name, op, "error").inc()
                return
            await export.gate.passed()  # a checkpoint may be holding completions
            if req.type == Cmd.READ:
                head = (frames.structured_data(req.handle, req.offset, len(data)) if self.structured
                        else frames.simple_reply(req.handle))
                self.w.write(head + data)
            else:
                self.w.write(frames.simple_reply(req.handle))
            metrics.REQUESTS.labels(export.name, op, "ok").inc()
            if req.type in (Cmd.READ, Cmd.WRITE):
                metrics.BYTES.labels(export.name, op).inc(req.length)
        finally:
            metrics.INFLIGHT.dec()

    def _check(self, export: Export, req: frames.Request) -> int:
        size = export.volume.size
        if req.type not in (Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.CACHE):
            return Err.EINVAL  # unknown or unsupported command (e.g. BLOCK_STATUS without a context)
        if req.type == Cmd.FLUSH:
            return Err.EINVAL if req.offset or req.length else 0
        if req.type == Cmd.READ and req.length > MAX_PAYLOAD:
            return Err.EINVAL
        if self.aligned and (req.offset % MIN_BLOCK or req.length % MIN_BLOCK):
            return Err.EINVAL
        if req.offset + req.length > size:
            return Err.ENOSPC if req.type in (Cmd.WRITE, Cmd.WRITE_ZEROES) else Err.EINVAL
        return 0

    def _reply_error(self, handle: int, error: int, typ: int, message: str) -> None:
        if self.structured and typ == Cmd.READ:
            self.w.write(frames.structured_error(handle, error, message))
        else:
            self.w.write(frames.simple_reply(handle, error))


def _default(exports: dict[str, Export]) -> str:
    """An empty export name means the default export: the only one, if there is only one."""
    return next(iter(exports)) if len(exports) == 1 else ""


def _op_name(typ: int) -> str:
    try:
        return Cmd(typ).name.lower()
    except ValueError:
        return "unknown"


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           exports: dict[str, Export]) -> None:
    conn = Connection(reader, writer, exports)
    peer = writer.get_extra_info("peername") or "unix"
    try:
        if await conn.negotiate():
            await conn.transmit()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client went away
    except frames.ProtocolError as exc:
        log.warning("closing connection after a protocol violation", peer=str(peer), error=str(exc))
    except Exception:
        log.exception("connection failed", peer=str(peer))
    finally:
        if conn.tasks:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        try:
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass

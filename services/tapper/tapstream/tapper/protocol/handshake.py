"""The server side of fixed newstyle negotiation as a pure state machine over bytes.

`Negotiation.feed(buf)` consumes every complete client message at the front of `buf` and returns the
bytes to send back; when it returns, `agreed` (go to transmission) or `closed` (drop the connection)
may be set. Garbage raises ProtocolError: the caller closes that one connection. No sockets here, so
the whole handshake is unit-tested and fuzzed in memory.

TLS (the protocol document's "TLS support"): `tls="on"` is SELECTIVETLS with every export open to
both plain and TLS clients; `tls="require"` is FORCEDTLS: before STARTTLS every option but STARTTLS
and ABORT gets NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME, which cannot be refused, closes. After
the ACK to STARTTLS `feed` stops and sets `starttls`; the caller upgrades the socket and calls
`tls_started()`, which forgets what was negotiated in plain text (a man in the middle chose it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from tapstream.tapper.protocol import frames
from tapstream.tapper.protocol.constants import (
    CLIENT_FIXED_NEWSTYLE,
    CLIENT_NO_ZEROES,
    Info,
    Opt,
    Rep,
)
from tapstream.tapper.protocol.frames import ProtocolError

TlsMode = Literal["off", "on", "require"]


@dataclass(frozen=True)
class BlockSizes:
    """What NBD_INFO_BLOCK_SIZE advertises: minimum, preferred and maximum payload."""

    minimum: int = 512
    preferred: int = 4096
    maximum: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class ExportInfo:
    name: str
    size: int
    flags: int  # transmission flags
    description: str = ""


@dataclass(frozen=True)
class Agreed:
    """The client chose `export`; transmission starts with these parameters."""

    export: str
    structured: bool
    aligned: bool  # the client asked for block sizes, so requests may be held to them


class Negotiation:
    def __init__(
        self,
        exports: Mapping[str, ExportInfo],
        blocks: BlockSizes = BlockSizes(),
        tls: TlsMode = "off",
        admit: Callable[[str], str | None] = lambda export: None,
    ) -> None:
        self.exports = exports
        self.admit = admit  # why a new connection to the export is refused (a limit), or None
        self.blocks = blocks
        self.tls = tls
        self.no_zeroes = False
        self.structured = False
        self.agreed: Agreed | None = None
        self.closed: str | None = None  # why the server ends the connection without transmission
        self.starttls = False  # ACK sent: the caller must upgrade to TLS before feeding more
        self.encrypted = False
        self.fixed = False  # TLS needs fixed newstyle on both sides
        self._have_flags = False

    def tls_started(self) -> None:
        """The TLS handshake succeeded: negotiate afresh, nothing from plain text carries over."""
        self.starttls = False
        self.encrypted = True
        self.structured = False

    @staticmethod
    def greeting() -> bytes:
        return frames.server_greeting()

    def feed(self, buf: bytearray) -> bytes:
        """Consume complete messages from the front of `buf`; return the replies to send."""
        out: list[bytes] = []
        while self.agreed is None and self.closed is None and not self.starttls:
            if not self._have_flags:
                if len(buf) < 4:
                    break
                (flags,) = struct.unpack_from(">I", buf)
                del buf[:4]
                if flags & ~(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES):
                    raise ProtocolError(f"unknown client flags {flags:#x}")
                self.no_zeroes = bool(flags & CLIENT_NO_ZEROES)
                self.fixed = bool(flags & CLIENT_FIXED_NEWSTYLE)
                self._have_flags = True
                if self.tls == "require" and not self.fixed:
                    self.closed = "TLS required: the client does not speak fixed newstyle"
                continue
            if len(buf) < 16:
                break
            option, length = frames.parse_option_header(bytes(buf[:16]))
            if len(buf) < 16 + length:
                break
            payload = bytes(buf[16 : 16 + length])
            del buf[: 16 + length]
            out.append(self._option(option, payload))
        return b"".join(out)

    def _default(self) -> str:
        """An empty export name means the default export: the only one, if there is only one."""
        return next(iter(self.exports)) if len(self.exports) == 1 else ""

    def _option(self, option: int, payload: bytes) -> bytes:
        if option == Opt.STARTTLS:
            return self._starttls(payload)
        if self.tls == "require" and not self.encrypted and option != Opt.ABORT:
            if option == Opt.EXPORT_NAME:
                self.closed = "TLS required: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS"
                return b""
            return frames.option_reply(
                option, Rep.ERR_TLS_REQD, b"this server requires TLS: send NBD_OPT_STARTTLS first"
            )
        if option == Opt.EXPORT_NAME:
            name = payload.decode(errors="replace") or self._default()
            export = self.exports.get(name)
            if export is None:
                self.closed = f"unknown export {name!r}"  # the only answer the protocol allows here
                return b""
            refusal = self.admit(export.name)
            if refusal is not None:
                self.closed = refusal
                return b""
            self.agreed = Agreed(export.name, self.structured, aligned=False)
            return frames.export_name_reply(export.size, export.flags, self.no_zeroes)
        if option == Opt.ABORT:
            self.closed = "client aborted"
            return frames.option_reply(option, Rep.ACK)
        if option == Opt.LIST:
            if payload:
                return frames.option_reply(option, Rep.ERR_INVALID, b"NBD_OPT_LIST takes no data")
            return b"".join(
                [
                    *(frames.rep_server(option, n) for n in self.exports),
                    frames.option_reply(option, Rep.ACK),
                ]
            )
        if option in (Opt.INFO, Opt.GO):
            return self._info(option, payload)
        if option == Opt.STRUCTURED_REPLY:
            if payload:
                return frames.option_reply(
                    option, Rep.ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data"
                )
            self.structured = True
            return frames.option_reply(option, Rep.ACK)
        if option in (Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT):
            if not self.structured:
                return frames.option_reply(
                    option, Rep.ERR_INVALID, b"negotiate structured replies first"
                )
            return frames.option_reply(
                option, Rep.ACK
            )  # no metadata contexts (yet): zero of them, then ACK
        return frames.option_reply(option, Rep.ERR_UNSUP)

    def _starttls(self, payload: bytes) -> bytes:
        option = Opt.STARTTLS
        if self.tls == "off" or not self.fixed:
            return frames.option_reply(
                option, Rep.ERR_POLICY, b"TLS is off on this server (TAPSTREAM_TAPPER_TLS)"
            )
        if self.encrypted:
            return frames.option_reply(option, Rep.ERR_INVALID, b"TLS is already on")
        if payload:
            return frames.option_reply(option, Rep.ERR_INVALID, b"NBD_OPT_STARTTLS takes no data")
        self.starttls = True
        return frames.option_reply(option, Rep.ACK)

    def _info(self, option: int, payload: bytes) -> bytes:
        try:
            req = frames.parse_info_request(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return frames.option_reply(option, Rep.ERR_INVALID, str(exc).encode())
        export = self.exports.get(req.name or self._default())
        if export is None:
            return frames.option_reply(
                option, Rep.ERR_UNKNOWN, f"no export named {req.name!r}".encode()
            )
        if option == Opt.GO:
            refusal = self.admit(export.name)
            if refusal is not None:
                return frames.option_reply(option, Rep.ERR_POLICY, refusal.encode())
        out = []
        if Info.NAME in req.infos:
            out.append(frames.info_name(option, export.name))
        if Info.DESCRIPTION in req.infos and export.description:
            out.append(frames.info_description(option, export.description))
        b = self.blocks
        out.append(frames.info_block_size(option, b.minimum, b.preferred, b.maximum))
        out.append(frames.info_export(option, export.size, export.flags))
        out.append(frames.option_reply(option, Rep.ACK))
        if option == Opt.GO:
            self.agreed = Agreed(export.name, self.structured, aligned=Info.BLOCK_SIZE in req.infos)
        return b"".join(out)

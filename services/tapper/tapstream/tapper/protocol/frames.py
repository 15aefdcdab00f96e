"""Build and parse NBD frames (pure functions over bytes)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tapstream.tapper.protocol.constants import (
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    IHAVEOPT,
    NBDMAGIC,
    OPT_REPLY_MAGIC,
    REPLY_FLAG_DONE,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
    Info,
    Rep,
    ReplyType,
)

OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT, option, length
REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle(cookie), offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic, error, handle
STRUCTURED_HEADER = struct.Struct(">IHHQI")  # magic, flags, type, handle, length
MAX_OPTION_LENGTH = 64 * 1024  # names and info requests are tiny; more is garbage


class ProtocolError(ValueError):
    """The peer broke the protocol in a way that ends this connection (not the server)."""


def server_greeting() -> bytes:
    return NBDMAGIC + struct.pack(">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)


def parse_option_header(data: bytes) -> tuple[int, int]:
    magic, option, length = OPTION_HEADER.unpack(data)
    if magic != IHAVEOPT:
        raise ProtocolError(f"bad option magic {magic:#x}")
    if length > MAX_OPTION_LENGTH:
        raise ProtocolError(f"option {option} length {length} is too large")
    return option, length


def option_reply(option: int, rep: int, payload: bytes = b"") -> bytes:
    return struct.pack(">QIII", OPT_REPLY_MAGIC, option, rep, len(payload)) + payload


def rep_server(option: int, name: str) -> bytes:
    raw = name.encode()
    return option_reply(option, Rep.SERVER, struct.pack(">I", len(raw)) + raw)


def info_export(option: int, size: int, flags: int) -> bytes:
    return option_reply(option, Rep.INFO, struct.pack(">HQH", Info.EXPORT, size, flags))


def info_block_size(option: int, minimum: int, preferred: int, maximum: int) -> bytes:
    return option_reply(
        option, Rep.INFO, struct.pack(">HIII", Info.BLOCK_SIZE, minimum, preferred, maximum)
    )


def info_name(option: int, name: str) -> bytes:
    return option_reply(option, Rep.INFO, struct.pack(">H", Info.NAME) + name.encode())


def info_description(option: int, text: str) -> bytes:
    return option_reply(
        option, Rep.INFO, struct.pack(">H", Info.DESCRIPTION) + text.encode()[:4096]
    )


@dataclass(frozen=True)
class InfoRequest:
    name: str
    infos: tuple[int, ...]


def parse_info_request(payload: bytes) -> InfoRequest:
    """NBD_OPT_INFO / NBD_OPT_GO payload: u32 name length, name, u16 n, n x u16 info types."""
    if len(payload) < 6:
        raise ValueError("NBD_OPT_GO/INFO payload too short")
    (name_len,) = struct.unpack_from(">I", payload)
    if 4 + name_len + 2 > len(payload):
        raise ValueError("export name runs past the option")
    name = payload[4 : 4 + name_len].decode("utf-8", errors="strict")
    (count,) = struct.unpack_from(">H", payload, 4 + name_len)
    rest = payload[4 + name_len + 2 :]
    if len(rest) != 2 * count:
        raise ValueError("information request count does not match the option length")
    return InfoRequest(name, struct.unpack(f">{count}H", rest))


def export_name_reply(size: int, flags: int, no_zeroes: bool) -> bytes:
    return struct.pack(">QH", size, flags) + (b"" if no_zeroes else bytes(124))


@dataclass(slots=True)  # not frozen: built once per request, and a frozen init costs 3x
class Request:
    flags: int
    type: int
    handle: int
    offset: int
    length: int


def parse_request(data: bytes | bytearray | memoryview, at: int = 0) -> Request:
    """The request header at `at` (REQUEST.size bytes; a WRITE's payload follows it)."""
    magic, flags, typ, handle, offset, length = REQUEST.unpack_from(data, at)
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"bad request magic {magic:#x}")
    return Request(flags, typ, handle, offset, length)


def simple_reply(handle: int, error: int = 0) -> bytes:
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


def structured_data(handle: int, offset: int, length: int) -> bytes:
    """Header of a final OFFSET_DATA chunk; the caller sends `length` bytes of data after it."""
    return STRUCTURED_HEADER.pack(
        STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, ReplyType.OFFSET_DATA, handle, 8 + length
    ) + struct.pack(">Q", offset)


def structured_error(handle: int, error: int, message: str = "") -> bytes:
    msg = message.encode()[:1024]
    payload = struct.pack(">IH", error, len(msg)) + msg
    return (
        STRUCTURED_HEADER.pack(
            STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, ReplyType.ERROR, handle, len(payload)
        )
        + payload
    )

"""NBD framing without sockets."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapstream.tapper.protocol import frames
from tapstream.tapper.protocol.constants import IHAVEOPT, REQUEST_MAGIC, Info, Rep


def test_greeting_is_fixed_newstyle_without_zeroes() -> None:
    g = frames.server_greeting()
    assert g[:8] == b"NBDMAGIC" and struct.unpack(">QH", g[8:]) == (IHAVEOPT, 3)


def test_info_request_round_trip() -> None:
    payload = struct.pack(">I", 3) + b"vol" + struct.pack(">HHH", 2, Info.BLOCK_SIZE, Info.NAME)
    req = frames.parse_info_request(payload)
    assert req.name == "vol" and req.infos == (Info.BLOCK_SIZE, Info.NAME)


@given(st.binary(max_size=40))
def test_bad_info_requests_raise_value_error(payload: bytes) -> None:
    try:
        frames.parse_info_request(payload)
    except (ValueError, UnicodeDecodeError):
        pass


def test_option_header_rejects_bad_magic_and_huge_lengths() -> None:
    with pytest.raises(frames.ProtocolError):
        frames.parse_option_header(struct.pack(">QII", 1, 7, 0))
    with pytest.raises(frames.ProtocolError):
        frames.parse_option_header(struct.pack(">QII", IHAVEOPT, 7, 1 << 30))


def test_request_parse_and_replies() -> None:
    req = frames.parse_request(struct.pack(">IHHQQI", REQUEST_MAGIC, 1, 1, 99, 4096, 512))
    assert (req.flags, req.type, req.handle, req.offset, req.length) == (1, 1, 99, 4096, 512)
    assert frames.simple_reply(99, 22) == struct.pack(">IIQ", 0x67446698, 22, 99)
    head = frames.structured_data(99, 4096, 512)
    magic, flags, typ, handle, length = struct.unpack(">IHHQI", head[:20])
    assert (magic, flags, typ, handle, length) == (0x668E33EF, 1, 1, 99, 520)
    err = frames.structured_error(5, 5, "boom")
    assert struct.unpack(">IH", err[20:26]) == (5, 4) and err.endswith(b"boom")


def test_option_reply_layout() -> None:
    r = frames.option_reply(7, Rep.ACK)
    assert struct.unpack(">QIII", r) == (0x3E889045565A9, 7, 1, 0)

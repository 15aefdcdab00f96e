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


def well_formed(payload: bytes) -> frames.InfoRequest | None:
    """The protocol document's reading of an NBD_OPT_GO/INFO payload, or None if it is not one."""
    if len(payload) < 6:
        return None
    n = int.from_bytes(payload[:4], "big")
    if 4 + n + 2 > len(payload):
        return None
    try:
        name = payload[4 : 4 + n].decode()
    except UnicodeDecodeError:
        return None
    count = int.from_bytes(payload[4 + n : 6 + n], "big")
    rest = payload[6 + n :]
    if len(rest) != 2 * count:
        return None
    return frames.InfoRequest(
        name, tuple(int.from_bytes(rest[i : i + 2], "big") for i in range(0, len(rest), 2))
    )


def info_payload(name: bytes, infos: list[int]) -> bytes:
    return struct.pack(f">I{len(name)}sH{len(infos)}H", len(name), name, len(infos), *infos)


PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.builds(info_payload, st.binary(max_size=12), st.lists(st.integers(0, 0xFFFF), max_size=5)),
    st.builds(  # a well-formed one, cut short or run long
        lambda p, cut, extra: p[:cut] + extra,
        st.builds(info_payload, st.binary(max_size=12), st.lists(st.integers(0, 4), max_size=5)),
        st.integers(0, 40),
        st.binary(max_size=3),
    ),
)


@given(PAYLOADS)
def test_info_request_parses_exactly_the_well_formed_payloads(payload: bytes) -> None:
    expected = well_formed(payload)
    if expected is None:
        with pytest.raises((ValueError, UnicodeDecodeError)):
            frames.parse_info_request(payload)
    else:
        assert frames.parse_info_request(payload) == expected


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


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=8),
)
def test_request_round_trip_at_any_position(
    flags: int, typ: int, handle: int, offset: int, length: int, before: bytes
) -> None:
    raw = before + frames.REQUEST.pack(REQUEST_MAGIC, flags, typ, handle, offset, length) + b"tail"
    req = frames.parse_request(bytearray(raw), len(before))
    assert req == frames.Request(flags, typ, handle, offset, length)


@given(st.integers(0, 2**32 - 1).filter(lambda m: m != REQUEST_MAGIC))
def test_request_with_bad_magic_is_a_protocol_error(magic: int) -> None:
    with pytest.raises(frames.ProtocolError, match="bad request magic"):
        frames.parse_request(frames.REQUEST.pack(magic, 0, 0, 1, 0, 512))

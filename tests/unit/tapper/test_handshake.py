"""The pure negotiation without TLS (test_handshake_tls.py has STARTTLS): every option the server
knows, the replies' layout, the default export, and that how the bytes are split does not matter."""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapstream.tapper.protocol.constants import (
    CLIENT_FIXED_NEWSTYLE,
    CLIENT_NO_ZEROES,
    IHAVEOPT,
    Info,
    Opt,
    Rep,
)
from tapstream.tapper.protocol.frames import ProtocolError
from tapstream.tapper.protocol.handshake import BlockSizes, ExportInfo, Negotiation

from .test_handshake_tls import option, replies

MiB = 1 << 20
ONE = {"vol": ExportInfo("vol", 16 * MiB, 0x1AD, "the only one")}
TWO = {**ONE, "other": ExportInfo("other", MiB, 1)}
FIXED = struct.pack(">I", CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)


def info_payload(name: bytes, *infos: int) -> bytes:
    return struct.pack(">I", len(name)) + name + struct.pack(f">H{len(infos)}H", len(infos), *infos)


def feed(data: bytes, exports: dict[str, ExportInfo] = ONE) -> tuple[Negotiation, bytes]:
    neg = Negotiation(exports, BlockSizes(512, 4096, 32 * MiB))
    buf = bytearray(FIXED + data)
    out = neg.feed(buf)
    return neg, out


def test_greeting_offers_fixed_newstyle_without_zeroes() -> None:
    g = Negotiation.greeting()
    assert g[:8] == b"NBDMAGIC" and struct.unpack(">QH", g[8:]) == (IHAVEOPT, 3)


def test_unknown_client_flags_end_the_connection() -> None:
    with pytest.raises(ProtocolError, match="client flags"):
        Negotiation(ONE).feed(bytearray(struct.pack(">I", 0x80)))


def test_bad_option_magic_and_huge_option_end_the_connection() -> None:
    with pytest.raises(ProtocolError, match="magic"):
        feed(struct.pack(">QII", 1, Opt.LIST, 0))
    with pytest.raises(ProtocolError, match="too large"):
        feed(struct.pack(">QII", IHAVEOPT, Opt.LIST, 1 << 20))


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_export_name_agrees_and_answers_size_and_flags(no_zeroes: bool) -> None:
    neg = Negotiation(ONE)
    flags = CLIENT_FIXED_NEWSTYLE | (CLIENT_NO_ZEROES if no_zeroes else 0)
    out = neg.feed(bytearray(struct.pack(">I", flags) + option(Opt.EXPORT_NAME, b"vol")))
    assert struct.unpack(">QH", out[:10]) == (16 * MiB, 0x1AD)
    assert out[10:] == (b"" if no_zeroes else bytes(124))
    assert neg.agreed is not None and neg.agreed.export == "vol"
    assert not neg.agreed.aligned and not neg.agreed.structured and neg.closed is None


def test_export_name_empty_means_the_only_export_and_unknown_closes() -> None:
    neg, _ = feed(option(Opt.EXPORT_NAME))
    assert neg.agreed is not None and neg.agreed.export == "vol"
    neg, out = feed(option(Opt.EXPORT_NAME), TWO)  # two exports: no default
    assert out == b"" and neg.agreed is None and neg.closed == "unknown export ''"
    neg, out = feed(option(Opt.EXPORT_NAME, b"nope"))
    assert out == b"" and neg.closed == "unknown export 'nope'"


def test_list_names_every_export_then_acks() -> None:
    _, out = feed(option(Opt.LIST), TWO)
    got = replies(out)
    assert [(o, r) for o, r, _ in got] == [(Opt.LIST, Rep.SERVER)] * 2 + [(Opt.LIST, Rep.ACK)]
    names = {p[4 : 4 + struct.unpack(">I", p[:4])[0]] for _, r, p in got if r == Rep.SERVER}
    assert names == {b"vol", b"other"}
    _, out = feed(option(Opt.LIST, b"x"))
    assert replies(out) == [(Opt.LIST, Rep.ERR_INVALID, b"NBD_OPT_LIST takes no data")]


def test_go_answers_infos_then_ack_and_agrees_aligned_when_block_size_was_asked() -> None:
    neg, out = feed(
        option(Opt.GO, info_payload(b"vol", Info.BLOCK_SIZE, Info.NAME, Info.DESCRIPTION))
    )
    got = replies(out)
    assert [r for _, r, _ in got] == [Rep.INFO] * 4 + [Rep.ACK]
    infos = {struct.unpack(">H", p[:2])[0]: p[2:] for _, r, p in got if r == Rep.INFO}
    assert infos[Info.NAME] == b"vol" and infos[Info.DESCRIPTION] == b"the only one"
    assert struct.unpack(">III", infos[Info.BLOCK_SIZE]) == (512, 4096, 32 * MiB)
    assert struct.unpack(">QH", infos[Info.EXPORT]) == (16 * MiB, 0x1AD)
    assert neg.agreed is not None and neg.agreed.aligned
    neg, _ = feed(option(Opt.GO, info_payload(b"vol")))
    assert neg.agreed is not None and not neg.agreed.aligned


def test_info_answers_without_agreeing_and_go_on_unknown_or_bad_payload_is_refused() -> None:
    neg, out = feed(option(Opt.INFO, info_payload(b"")))  # empty name: the default export
    assert replies(out)[-1][:2] == (Opt.INFO, Rep.ACK) and neg.agreed is None
    neg, out = feed(option(Opt.GO, info_payload(b"nope")))
    assert replies(out) == [(Opt.GO, Rep.ERR_UNKNOWN, b"no export named 'nope'")]
    assert neg.agreed is None and neg.closed is None  # the client may try another name
    neg, out = feed(option(Opt.GO, b"\0\0\0\x09vol\0\0"))  # the name runs past the option
    assert replies(out)[0][:2] == (Opt.GO, Rep.ERR_INVALID) and neg.agreed is None


def test_structured_replies_and_meta_contexts() -> None:
    _, out = feed(option(Opt.LIST_META_CONTEXT))
    assert replies(out)[0][:2] == (Opt.LIST_META_CONTEXT, Rep.ERR_INVALID)
    _, out = feed(option(Opt.STRUCTURED_REPLY, b"x"))
    assert replies(out)[0][:2] == (Opt.STRUCTURED_REPLY, Rep.ERR_INVALID)
    neg, out = feed(
        option(Opt.STRUCTURED_REPLY)
        + option(Opt.SET_META_CONTEXT)
        + option(Opt.GO, info_payload(b"vol"))
    )
    got = replies(out)
    assert got[:2] == [(Opt.STRUCTURED_REPLY, Rep.ACK, b""), (Opt.SET_META_CONTEXT, Rep.ACK, b"")]
    assert neg.agreed is not None and neg.agreed.structured


def test_unknown_option_is_unsupported_and_abort_acks_and_closes() -> None:
    neg, out = feed(option(99) + option(Opt.ABORT) + option(Opt.LIST))
    assert replies(out) == [(99, Rep.ERR_UNSUP, b""), (Opt.ABORT, Rep.ACK, b"")]
    assert neg.closed == "client aborted"  # nothing after ABORT is read


def test_feed_stops_at_agreement_and_leaves_transmission_bytes() -> None:
    request = b"R" * 28
    neg = Negotiation(ONE)
    buf = bytearray(FIXED + option(Opt.GO, info_payload(b"vol")) + request)
    neg.feed(buf)
    assert neg.agreed is not None and bytes(buf) == request


SESSION = (
    option(Opt.LIST)
    + option(Opt.STRUCTURED_REPLY)
    + option(Opt.INFO, info_payload(b"vol", Info.NAME))
    + option(42, b"junk")
    + option(Opt.GO, info_payload(b"vol", Info.BLOCK_SIZE))
)


@given(st.lists(st.integers(1, len(FIXED + SESSION) - 1), max_size=12))
def test_how_the_bytes_are_split_does_not_matter(cuts: list[int]) -> None:
    whole, whole_out = feed(SESSION)
    data, neg, buf, out = (
        FIXED + SESSION,
        Negotiation(ONE, BlockSizes(512, 4096, 32 * MiB)),
        bytearray(),
        b"",
    )
    bounds = [0, *sorted(set(cuts)), len(data)]
    for a, b in pairwise(bounds):
        buf += data[a:b]
        out += neg.feed(buf)
    assert out == whole_out and neg.agreed == whole.agreed and neg.agreed is not None


@given(
    st.lists(st.tuples(st.integers(0, 16), st.binary(max_size=24)), max_size=6),
    st.binary(max_size=20),
)
def test_garbage_options_get_well_formed_replies_or_a_protocol_error(
    options: list[tuple[int, bytes]], tail: bytes
) -> None:
    """Fuzzed options: every reply parses, and the session ends in a known state or waits for more."""
    neg = Negotiation(ONE)
    buf = bytearray(FIXED + b"".join(option(o, p) for o, p in options) + tail)
    try:
        out = neg.feed(buf)
    except ProtocolError:
        return  # the caller closes this one connection
    if neg.agreed is None:
        replies(out)  # only option replies, each well-formed
    assert neg.agreed is None or neg.agreed.export == "vol"

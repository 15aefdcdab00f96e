"""NBD_OPT_STARTTLS in the pure negotiation: the three modes of the protocol document, in memory."""

from __future__ import annotations

import struct

import pytest

from tapstream.tapper.protocol.constants import (
    CLIENT_FIXED_NEWSTYLE,
    CLIENT_NO_ZEROES,
    IHAVEOPT,
    OPT_REPLY_MAGIC,
    Opt,
    Rep,
)
from tapstream.tapper.protocol.handshake import ExportInfo, Negotiation, TlsMode

EXPORTS = {"vol": ExportInfo("vol", 1 << 20, 1)}
FLAGS = struct.pack(">I", CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)


def option(opt: int, payload: bytes = b"") -> bytes:
    return struct.pack(">QII", IHAVEOPT, opt, len(payload)) + payload


def go(name: bytes = b"vol") -> bytes:
    return option(Opt.GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))


def replies(out: bytes) -> list[tuple[int, int, bytes]]:
    """(option, reply type, payload) of each option reply in `out`; nothing left over."""
    got, pos = [], 0
    while pos < len(out):
        magic, opt, rep, n = struct.unpack_from(">QIII", out, pos)
        assert magic == OPT_REPLY_MAGIC
        got.append((opt, rep, out[pos + 20 : pos + 20 + n]))
        pos += 20 + n
    assert pos == len(out)
    return got


def negotiate(tls: TlsMode, data: bytes) -> tuple[Negotiation, bytes]:
    neg = Negotiation(EXPORTS, tls=tls)
    buf = bytearray(FLAGS + data)
    out = neg.feed(buf)
    return neg, out


def test_off_refuses_starttls_with_policy_and_goes_on_in_plain_text() -> None:
    neg, out = negotiate("off", option(Opt.STARTTLS) + go())
    (starttls, *_rest) = replies(out)
    assert starttls[:2] == (Opt.STARTTLS, Rep.ERR_POLICY)
    assert not neg.starttls and neg.agreed is not None and neg.agreed.export == "vol"


@pytest.mark.parametrize("mode", ["on", "require"])
def test_starttls_acks_and_stops_before_the_tls_bytes(mode: TlsMode) -> None:
    neg = Negotiation(EXPORTS, tls=mode)
    client_hello = b"\x16\x03\x01 not an NBD option"
    buf = bytearray(FLAGS + option(Opt.STARTTLS) + client_hello)
    out = neg.feed(buf)
    assert replies(out) == [(Opt.STARTTLS, Rep.ACK, b"")]
    assert neg.starttls and bytes(buf) == client_hello  # left for the caller's TLS layer
    assert neg.feed(buf) == b"" and bytes(buf) == client_hello  # nothing parsed until TLS is up


def test_state_from_plain_text_is_forgotten_after_tls() -> None:
    neg, out = negotiate("on", option(Opt.STRUCTURED_REPLY) + option(Opt.STARTTLS))
    assert [r[1] for r in replies(out)] == [Rep.ACK, Rep.ACK] and neg.structured
    neg.tls_started()
    assert neg.encrypted and not neg.structured and not neg.starttls
    out = neg.feed(bytearray(option(Opt.STARTTLS) + go()))
    again, *_info, ack = replies(out)
    assert again[:2] == (Opt.STARTTLS, Rep.ERR_INVALID)  # TLS is already on
    assert ack[1] == Rep.ACK and neg.agreed is not None and not neg.agreed.structured


def test_starttls_with_data_is_invalid() -> None:
    neg, out = negotiate("on", option(Opt.STARTTLS, b"x"))
    assert replies(out)[0][:2] == (Opt.STARTTLS, Rep.ERR_INVALID) and not neg.starttls


@pytest.mark.parametrize(
    "opt",
    [Opt.LIST, Opt.INFO, Opt.GO, Opt.STRUCTURED_REPLY, Opt.LIST_META_CONTEXT, 99],
)
def test_require_answers_tls_reqd_to_every_plain_option(opt: int) -> None:
    payload = go()[16:] if opt in (Opt.INFO, Opt.GO) else b""
    neg, out = negotiate("require", option(opt, payload))
    ((o, rep, msg),) = replies(out)
    assert (o, rep) == (opt, Rep.ERR_TLS_REQD) and b"STARTTLS" in msg
    assert neg.agreed is None and neg.closed is None and not neg.structured


def test_require_closes_on_plain_export_name_and_allows_abort() -> None:
    neg, out = negotiate("require", option(Opt.EXPORT_NAME, b"vol"))
    assert out == b"" and neg.agreed is None and neg.closed and "TLS" in neg.closed
    neg, out = negotiate("require", option(Opt.ABORT))
    assert replies(out) == [(Opt.ABORT, Rep.ACK, b"")] and neg.closed == "client aborted"


def test_require_serves_everything_once_tls_is_on() -> None:
    neg, out = negotiate("require", option(Opt.LIST) + option(Opt.STARTTLS))
    assert [r[1] for r in replies(out)] == [Rep.ERR_TLS_REQD, Rep.ACK]
    neg.tls_started()
    out = neg.feed(bytearray(option(Opt.LIST) + option(Opt.EXPORT_NAME, b"vol")))
    assert struct.unpack_from(">QIII", out)[2] == Rep.SERVER
    assert neg.agreed is not None and neg.agreed.export == "vol"


def test_on_serves_plain_clients() -> None:
    neg, out = negotiate("on", option(Opt.LIST) + go())
    assert replies(out)[0][1] == Rep.SERVER and neg.agreed is not None


def test_require_refuses_a_client_without_fixed_newstyle() -> None:
    neg = Negotiation(EXPORTS, tls="require")
    neg.feed(bytearray(struct.pack(">I", CLIENT_NO_ZEROES) + option(Opt.EXPORT_NAME, b"vol")))
    assert neg.closed and neg.agreed is None
    neg = Negotiation(EXPORTS, tls="on")  # and in `on` such a client may not start TLS
    out = neg.feed(bytearray(struct.pack(">I", 0) + option(Opt.STARTTLS)))
    assert replies(out)[0][1] == Rep.ERR_POLICY and not neg.starttls

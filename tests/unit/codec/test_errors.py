"""Bad bytes raise DecodeError, never anything else; a registry that is down fails fast and clearly."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapstream.core.codec import DecodeError, EncodeError, RegistryUnavailable, decode_any, make_codec
from tapstream.core.settings import TapstreamSettings

codec = make_codec(TapstreamSettings())
GOOD = codec.encode("DiskEvent", {"volume": "v", "seq": 1, "ts": 1, "host": "h", "group": "g",
                                  "body": ("Write", {"offset": 0, "length": 3, "data": b"abc", "checksum": 7})})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_decode_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_after_a_valid_header_raises_decode_error(tail: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(GOOD[:10] + b"\xff" + tail + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")


@pytest.mark.parametrize("cut", range(1, len(GOOD)))
def test_every_truncation_is_detected(cut: int) -> None:
    with pytest.raises(DecodeError):
        codec.decode(GOOD[:cut])


def test_unknown_fingerprint_is_named() -> None:
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(GOOD[:2] + b"\x00" * 8 + GOOD[10:])


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(GOOD + b"\x00")


def test_a_record_that_does_not_fit_raises_encode_error() -> None:
    with pytest.raises(EncodeError):
        codec.encode("Progress", {"group": "g"})


def test_decode_any_picks_the_encoding_by_first_byte(registry_url: str) -> None:
    assert decode_any(GOOD)[0] == "DiskEvent"
    settings_ = TapstreamSettings(schema_registry_url=registry_url)
    confluent = make_codec(settings_).encode("Alert", {
        "id": "a", "kind": "encryption", "group": "g", "volume": "v", "onset_ts": 1, "detected_ts": 2,
        "severity": "CRITICAL", "score": 0.9, "encrypted_share": 0.8, "last_clean_checkpoint": None,
        "message": "m", "details": {}})
    assert decode_any(confluent, settings_)[1]["kind"] == "encryption"
    with pytest.raises(DecodeError, match="REGISTRY_URL"):
        decode_any(confluent)


def test_registry_down_is_a_clear_error_not_a_hang() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    codec_ = make_codec(TapstreamSettings(schema_registry_url=f"http://127.0.0.1:{port}"))
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{port}"):
        codec_.encode("Command", {"id": "c", "group": "g", "kind": "PAUSE", "sender": "s", "ts": 0})
    assert time.monotonic() - t0 < 30  # bounded by the client timeout, not a hang

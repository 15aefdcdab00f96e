"""Bad bytes raise DecodeError and nothing else; records that do not fit raise EncodeError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapstream.core.codec import DecodeError, EncodeError, make_codec
from tapstream.core.settings import TapstreamSettings

from .conftest import Registry
from .samples import SAMPLES

codec = make_codec(TapstreamSettings())
ENCODED = {key: codec.encode(name, record) for key, (name, record) in SAMPLES.items()}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)  # 2^-16 odds of a valid magic, then a 2^-64 fingerprint: never valid


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(ENCODED)), tail=st.binary(max_size=64))
def test_garbage_after_a_valid_header_decodes_or_raises_decode_error(key: str, tail: bytes) -> None:
    try:
        name, record = codec.decode(ENCODED[key][:10] + tail)
    except DecodeError:
        return
    assert name == SAMPLES[key][0] and isinstance(
        record, dict
    )  # garbage that happens to be a record


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(ENCODED)), data=st.data())
def test_every_truncation_is_detected(key: str, data: st.DataObject) -> None:
    full = ENCODED[key]
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(DecodeError):
        codec.decode(full[:cut])


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(sorted(ENCODED)), data=st.data())
def test_a_flipped_byte_never_raises_anything_but_decode_error(
    key: str, data: st.DataObject
) -> None:
    full = bytearray(ENCODED[key])
    i = data.draw(st.integers(10, len(full) - 1))
    full[i] ^= data.draw(st.integers(1, 255))
    try:
        codec.decode(bytes(full))
    except DecodeError:
        pass  # a flip inside a string or number can still be a valid record: both are fine


def test_confluent_garbage_raises_decode_error(registry: Registry) -> None:
    confluent = make_codec(TapstreamSettings(schema_registry_url=registry.url))
    good = confluent.encode("Command", SAMPLES["Command"][1])
    for bad in (
        b"",
        b"\x00",
        b"\x00\x00\x00",
        b"\x01" + good[1:],
        good[:-1],
        good + b"\x00",
        b"\x00\x00\x00\x00\x02" + good[5:],
    ):
        with pytest.raises(DecodeError):
            confluent.decode(bad)


def test_unknown_fingerprint_is_named() -> None:
    good = ENCODED["DiskEvent-Write"]
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0000000000000000"):
        codec.decode(good[:2] + b"\x00" * 8 + good[10:])


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(ENCODED["DiskEvent-Write"] + b"\x00")


def test_confluent_bytes_without_a_registry_say_what_to_set() -> None:
    with pytest.raises(DecodeError, match=r"schema id 7\): set TAPSTREAM_SCHEMA_REGISTRY_URL"):
        codec.decode(b"\x00\x00\x00\x00\x07\x02")


HEADER = {"volume": "v", "seq": 1, "ts": 1, "host": "h", "group": "g"}


@pytest.mark.parametrize(
    ("name", "record", "why"),
    [
        ("Progress", {"group": "g"}, "does not fit"),
        ("Nope", {}, "unknown record type 'Nope'"),
        (
            "DiskEvent",
            {**HEADER, "body": {"offset": 0, "length": 1, "data": b"x", "checksum": 0}},
            "must name its branch",
        ),
        ("DiskEvent", {**HEADER, "body": ("Discard", {"offset": 0})}, "does not fit"),
        ("DiskEvent", {**HEADER, "body": ("Flush",)}, "branch name, fields"),
        ("DiskEvent", {**HEADER, "seq": "one", "body": ("Flush", {"fua": False})}, "does not fit"),
        ("DiskEvent", {**HEADER, "seq": 2**63, "body": ("Flush", {"fua": False})}, "does not fit"),
        ("Command", {**SAMPLES["Command"][1], "kind": "DANCE"}, "does not fit"),
    ],
)
def test_a_record_that_does_not_fit_raises_encode_error(name: str, record: dict, why: str) -> None:
    with pytest.raises(EncodeError, match=why):
        codec.encode(name, record)

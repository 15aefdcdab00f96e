"""Poison records: what `classify` calls poison and what a dead letter's headers say (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tapstream.core.codec import make_codec
from tapstream.core.dlq import DeadLetters, Poison, classify, headers
from tapstream.core.keep import tag_command
from tapstream.core.settings import TapstreamSettings

codec = make_codec(TapstreamSettings())
WRITE = {
    "volume": "disk0",
    "seq": 7,
    "ts": 1_764_000_000_000_000,
    "host": "hv1",
    "group": "g1",
    "body": ("Write", {"offset": 4096, "length": 3, "data": b"abc", "checksum": 1}),
}
COMMAND = {
    **tag_command("g1", "cp-1", "kept", True, "test", 1_764_000_000_000_000),
    "key_id": None,
    "signature": None,
}


def test_a_record_of_the_expected_type_is_returned_decoded() -> None:
    assert classify(codec.encode("DiskEvent", WRITE), codec, "DiskEvent") == (WRITE, None)
    assert classify(codec.encode("Command", COMMAND), codec, "Command") == (COMMAND, None)


def test_a_tombstone_is_poison() -> None:
    record, poison = classify(None, codec, "DiskEvent")
    assert record is None and poison is not None and poison.reason == "tombstone"


def test_another_record_type_is_foreign() -> None:
    record, poison = classify(codec.encode("Command", COMMAND), codec, "DiskEvent")
    assert record is None and poison is not None
    assert poison.reason == "foreign" and "Command" in poison.error and "DiskEvent" in poison.error


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00", b"not avro", codec.encode("DiskEvent", WRITE)[:-2]],
    ids=["empty", "confluent-magic", "text", "truncated"],
)
def test_bad_bytes_are_undecodable(value: bytes) -> None:
    record, poison = classify(value, codec, "DiskEvent")
    assert record is None and poison is not None and poison.reason == "undecodable"
    assert poison.error  # the codec's message, for the dead letter's headers


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_poison_never_an_exception(value: bytes) -> None:
    record, poison = classify(value, codec, "DiskEvent")
    assert record is None and poison is not None and poison.reason == "undecodable"


def test_headers_name_the_source_and_the_reason() -> None:
    got = headers("tapstream.writes.g1", 3, 12345, Poison("foreign", "a Command"), "journal")
    assert got == [
        ("tapstream.dlq.topic", b"tapstream.writes.g1"),
        ("tapstream.dlq.partition", b"3"),
        ("tapstream.dlq.offset", b"12345"),
        ("tapstream.dlq.reason", b"foreign"),
        ("tapstream.dlq.error", b"a Command"),
        ("tapstream.dlq.service", b"journal"),
    ]


def test_a_long_error_is_cut_to_fit_a_header() -> None:
    got = dict(headers("t", 0, 0, Poison("undecodable", "é" * 5000), "journal"))
    assert got["tapstream.dlq.error"].decode() == "é" * 1000


def test_send_counts_the_record_even_before_the_producer_started() -> None:
    dead = DeadLetters(TapstreamSettings(topic_prefix="tapstream.unit"), "unit-test")
    labels = {"service": "unit-test", "topic": "tapstream.unit.writes.g1", "reason": "tombstone"}
    before = REGISTRY.get_sample_value("tapstream_dead_letters_total", labels) or 0.0
    fut = dead.send("tapstream.unit.writes.g1", 0, 5, b"disk0", None, Poison("tombstone", "x"))
    assert fut is None  # nothing to wait for: no producer yet
    assert REGISTRY.get_sample_value("tapstream_dead_letters_total", labels) == before + 1
    assert dead.topic == "tapstream.unit.dlq"

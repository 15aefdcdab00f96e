"""decode(encode(x)) == x for every record type and every DiskEvent body, in both encodings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from tapstream.core.codec import SCHEMAS, DecodeError, make_codec
from tapstream.core.codec.schemas import current
from tapstream.core.codec.single_object import MAGIC
from tapstream.core.settings import TapstreamSettings

from .conftest import Registry
from .strategies import BODIES, BY_NAME, CASES, blobs, longs, micros, text

single = make_codec(TapstreamSettings())


def test_every_schema_and_every_branch_has_a_strategy() -> None:
    assert set(SCHEMAS) == set(BY_NAME)
    union = next(f for f in current()["DiskEvent"].raw["fields"] if f["name"] == "body")["type"]
    assert [b["name"] for b in union] == list(BODIES)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_single_object_round_trip(case: str, data: st.DataObject) -> None:
    name, strategy = CASES[case]
    record = data.draw(strategy)
    encoded = single.encode(name, record)
    assert encoded[:2] == MAGIC and encoded[2:10] == current()[name].fingerprint
    assert single.decode(encoded) == (name, record)
    assert single.decode_as(encoded, name) == record


@pytest.mark.parametrize("case", sorted(CASES))
def test_confluent_round_trip(case: str, registry: Registry) -> None:
    name, strategy = CASES[case]
    codec = make_codec(TapstreamSettings(schema_registry_url=registry.url))
    reader = make_codec(TapstreamSettings(schema_registry_url=registry.url))  # cold id cache

    @settings(max_examples=25, deadline=None)
    @given(record=strategy)
    def check(record: dict) -> None:
        encoded = codec.encode(name, record)
        assert encoded[:1] == b"\x00"
        assert reader.decode(encoded) == (name, record)
        # Same Avro body as single-object: only the framing differs.
        assert encoded[5:] == single.encode(name, record)[10:]

    check()
    assert registry.subjects == {f"io.tapstream.{name}": [1]}  # registered once, then cached
    assert registry.count("GET", "/schemas/ids/") == 1  # the cold reader asked once


@settings(max_examples=60, deadline=None)
@given(
    volume=text,
    seq=longs,
    ts=micros,
    host=text,
    group=text,
    offset=longs,
    data=blobs,
    sync_id=st.none() | text,
    checksum=st.none() | st.integers(0, 2**32 - 1),
)
def test_encode_write_equals_the_generic_path(
    volume: str,
    seq: int,
    ts: int,
    host: str,
    group: str,
    offset: int,
    data: bytes,
    sync_id: str | None,
    checksum: int | None,
) -> None:
    fields = {
        "offset": offset,
        "length": len(data),
        "data": data,
        "checksum": crc32c(data) if checksum is None else checksum,
    }
    body = ("Write", fields) if sync_id is None else ("SyncBlock", {"sync_id": sync_id, **fields})
    record = {"volume": volume, "seq": seq, "ts": ts, "host": host, "group": group, "body": body}
    fast = single.encode_write(
        volume, seq, ts, host, group, offset, memoryview(data), checksum, sync_id
    )
    assert fast == single.encode("DiskEvent", record)
    assert single.decode(fast) == ("DiskEvent", record)


def test_encode_write_in_confluent_mode(registry: Registry) -> None:
    codec = make_codec(TapstreamSettings(schema_registry_url=registry.url))
    fast = codec.encode_write("v", 1, 2, "h", "g", 4096, b"abc")
    assert fast[:5] == b"\x00\x00\x00\x00\x01"
    assert codec.decode(fast)[1]["body"] == (
        "Write",
        {"offset": 4096, "length": 3, "data": b"abc", "checksum": crc32c(b"abc")},
    )


def test_decode_as_rejects_another_record_type() -> None:
    encoded = single.encode_write("v", 1, 2, "h", "g", 0, b"x")
    with pytest.raises(DecodeError, match="expected a Command, got a DiskEvent"):
        single.decode_as(encoded, "Command")


def test_full_branch_names_and_datetimes_are_accepted_on_encode() -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    record = {
        "volume": "v",
        "seq": 1,
        "ts": ts,
        "host": "h",
        "group": "g",
        "body": ("io.tapstream.Flush", {"fua": True}),
    }
    _, back = single.decode(single.encode("DiskEvent", record))
    assert back["ts"] == int(ts.timestamp()) * 1_000_000 + 678901
    assert back["body"] == ("Flush", {"fua": True})


def test_a_confluent_codec_reads_single_object_bytes(registry: Registry) -> None:
    codec = make_codec(TapstreamSettings(schema_registry_url=registry.url))
    encoded = single.encode_write("v", 7, 2, "h", "g", 0, b"old")
    assert codec.decode(encoded)[1]["seq"] == 7
    assert registry.requests == []  # no registry needed for self-describing bytes


def test_the_registry_receives_the_full_schema(registry: Registry) -> None:
    # Defaults must reach the registry, or its compatibility check refuses every evolution.
    make_codec(TapstreamSettings(schema_registry_url=registry.url)).encode_write(
        "v", 1, 2, "h", "g", 0, b""
    )
    (schema,) = registry.schemas
    assert json.loads(schema) == current()["DiskEvent"].raw
    assert '"default":false' in schema and '"logicalType":"timestamp-micros"' in schema

"""The hand-written Write encoding agrees with fastavro, and refuses a schema it does not know."""

from __future__ import annotations

import copy
import io

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from tapstream.core.codec.fast_write import (
    DataEncoder,
    EncoderMismatch,
    avro_string,
    check_layout,
    varint,
)
from tapstream.core.codec.schemas import current
from tapstream.core.codec.single_object import SingleObjectCodec

CODEC = SingleObjectCodec()

LONG = parse_schema("long")
STRING = parse_schema("string")


def avro(schema: object, value: object) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, value)
    return buf.getvalue()


@given(
    st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([0, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63)])
)
def test_varint_is_avro_long(n: int) -> None:
    assert varint(n) == avro(LONG, n)


@given(st.text(max_size=300))
def test_avro_string(s: str) -> None:
    assert avro_string(s) == avro(STRING, s)


def test_check_layout_accepts_the_current_schema() -> None:
    check_layout(current()["DiskEvent"].parsed)


@pytest.mark.parametrize("change", ["field in Write", "header field", "branch order"])
def test_check_layout_refuses_a_changed_schema(change: str) -> None:
    raw = copy.deepcopy(current()["DiskEvent"].raw)
    body = next(f for f in raw["fields"] if f["name"] == "body")
    if change == "field in Write":
        body["type"][0]["fields"].append(
            {"name": "compressed", "type": "boolean", "default": False}
        )
    elif change == "header field":
        raw["fields"].insert(2, {"name": "epoch", "type": "int", "default": 0})
    else:
        body["type"][0], body["type"][1] = body["type"][1], body["type"][0]
    with pytest.raises(AssertionError, match="fast_write no longer matches"):
        check_layout(parse_schema(raw, named_schemas={}))


@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**62),
    st.binary(max_size=600),
    st.integers(0, 2**32 - 1),
    st.none() | st.text(max_size=40),
    st.text(min_size=1, max_size=20),
)
def test_data_encoder_writes_what_the_codec_writes(
    seq: int, ts: int, offset: int, data: bytes, checksum: int, sync_id: str | None, volume: str
) -> None:
    """The tapper's per-volume encoder, prefix learnt from the codec, is byte-exact with the
    generic fastavro path for Write and SyncBlock."""
    encoder = DataEncoder.learn(CODEC.encode, volume, "host-é", "g1")
    body = {"offset": offset, "length": len(data), "data": data, "checksum": checksum}
    branch = ("Write", body) if sync_id is None else ("SyncBlock", {"sync_id": sync_id, **body})
    record = {"volume": volume, "seq": seq, "ts": ts, "host": "host-é", "group": "g1"}
    generic = CODEC.encode("DiskEvent", {**record, "body": branch})
    assert encoder.encode(seq, ts, offset, memoryview(data), checksum, sync_id) == generic


def test_data_encoder_checksum_defaults_to_crc32c() -> None:
    encoder = DataEncoder.learn(CODEC.encode, "v", "h", "g")
    _, record = CODEC.decode(encoder.encode(3, 4, 512, b"abc"))
    assert record["body"] == (
        "Write",
        {"offset": 512, "length": 3, "data": b"abc", "checksum": 0x364B3FB7},
    )


def test_data_encoder_refuses_a_codec_it_does_not_match() -> None:
    def other(name: str, record: dict[str, object]) -> bytes:
        return CODEC.encode(name, record) + b"\x00"  # e.g. a field appended to DiskEvent

    with pytest.raises(EncoderMismatch):
        DataEncoder.learn(other, "v", "h", "g")

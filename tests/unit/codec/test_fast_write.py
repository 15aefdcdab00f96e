"""The hand-written Write encoding agrees with fastavro, and refuses a schema it does not know."""

from __future__ import annotations

import copy
import io

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from tapstream.core.codec.fast_write import avro_string, check_layout, varint
from tapstream.core.codec.schemas import current

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

"""decode(encode(x)) == x for every record type and every DiskEvent body, in both encodings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapstream.core.codec import SCHEMAS, make_codec
from tapstream.core.codec.single_object import MAGIC
from tapstream.core.settings import TapstreamSettings

from .strategies import BY_NAME

single = make_codec(TapstreamSettings())


def test_every_schema_has_a_strategy() -> None:
    assert set(SCHEMAS) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_single_object_round_trip(name: str, data: st.DataObject) -> None:
    record = data.draw(BY_NAME[name])
    encoded = single.encode(name, record)
    assert encoded[:2] == MAGIC
    assert single.decode(encoded) == (name, record)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_confluent_round_trip(name: str, registry_url: str) -> None:
    codec = make_codec(TapstreamSettings(schema_registry_url=registry_url))
    reader = make_codec(TapstreamSettings(schema_registry_url=registry_url))  # cold id cache

    @settings(max_examples=30, deadline=None)
    @given(record=BY_NAME[name])
    def check(record: dict) -> None:
        encoded = codec.encode(name, record)
        assert encoded[:1] == b"\x00"
        assert reader.decode(encoded) == (name, record)

    check()

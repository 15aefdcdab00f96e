"""Encoded bytes are frozen: an accidental schema change (field order, type, name, default) fails
here. Golden files are written by `python -m tests.unit.codec.samples` (see samples.py)."""

from __future__ import annotations

import json

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.settings import TapstreamSettings

from .conftest import Registry
from .samples import GOLDEN, SAMPLES, schema_digests

codec = make_codec(TapstreamSettings())
REGENERATE = (
    "If the change is deliberate and compatible, copy the old schema to schemas/history/ and "
    "regenerate with `python -m tests.unit.codec.samples`."
)


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_encoding_matches_golden_bytes(key: str) -> None:
    name, record = SAMPLES[key]
    golden = (GOLDEN / f"{key}.bin").read_bytes()
    assert codec.encode(name, record) == golden, f"{key}: the encoding changed. {REGENERATE}"
    assert codec.decode(golden) == (name, record)


def test_schemas_match_their_digests() -> None:
    # Defaults and docs-free structure: a changed default changes how old events are read.
    frozen = json.loads((GOLDEN / "schemas.json").read_text())
    changed = [n for n, digest in schema_digests().items() if frozen.get(n) != digest]
    assert not changed, f"schemas changed: {changed}. {REGENERATE}"


def test_confluent_bodies_match_the_golden_bodies(registry: Registry) -> None:
    confluent = make_codec(TapstreamSettings(schema_registry_url=registry.url))
    for key, (name, record) in SAMPLES.items():
        encoded = confluent.encode(name, record)
        assert encoded[5:] == (GOLDEN / f"{key}.bin").read_bytes()[10:], key
        assert confluent.decode(encoded) == (name, record)


def test_the_write_fast_path_matches_the_golden_bytes() -> None:
    _, record = SAMPLES["DiskEvent-Write"]
    body = record["body"][1]
    fast = codec.encode_write(
        record["volume"],
        record["seq"],
        record["ts"],
        record["host"],
        record["group"],
        body["offset"],
        body["data"],
        body["checksum"],
    )
    assert fast == (GOLDEN / "DiskEvent-Write.bin").read_bytes()

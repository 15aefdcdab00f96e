"""Encoded bytes are frozen: an accidental schema change (field order, type, name) fails here."""

from __future__ import annotations

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.settings import TapstreamSettings

from .samples import GOLDEN, SAMPLES

codec = make_codec(TapstreamSettings())


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_encoding_matches_golden_bytes(key: str) -> None:
    name, record = SAMPLES[key]
    golden = (GOLDEN / f"{key}.bin").read_bytes()
    assert codec.encode(name, record) == golden, (
        f"{key}: the encoding changed. If the schema change is deliberate and compatible, add the old "
        "schema to schemas/history/ and regenerate with `python -m tests.unit.codec.samples`."
    )
    assert codec.decode(golden) == (name, record)

"""Halt and poison reasons are StrEnums whose values are on the wire (Progress, Alert, DLQ headers)."""

from __future__ import annotations

import json

import pytest

from tapstream.core.contract import Cursor, Halt, HaltReason
from tapstream.core.dlq import Poison, PoisonReason, headers


def test_the_values_are_the_documented_strings() -> None:
    assert [r.value for r in HaltReason] == ["gap", "checksum", "bracket", "undecodable"]
    assert [r.value for r in PoisonReason] == ["tombstone", "undecodable", "foreign", "invalid"]


def test_a_halt_rebuilt_from_the_saved_cursor_has_its_reason_back() -> None:
    cursor = Cursor("v1", 4)
    cursor.stop(Halt(HaltReason.GAP, "expected 5, got 7", 7))
    saved = json.loads(json.dumps(cursor.to_json()))
    assert saved["halt"]["reason"] == "gap"
    again = Halt(**Cursor.from_json("v1", saved).halt)  # type: ignore[arg-type]
    assert again.reason is HaltReason.GAP and str(again) == "gap: expected 5, got 7"


def test_an_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError):
        Poison("bogus", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Halt("bogus", "x")


def test_a_poison_reason_is_its_plain_string_in_the_header() -> None:
    got = dict(headers("t", 0, 0, Poison(PoisonReason.FOREIGN, "a Command"), "journal"))
    assert got["tapstream.dlq.reason"] == b"foreign"

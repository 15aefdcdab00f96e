"""core.records against schemas/*.avsc: every record, field, default and type, so they cannot drift."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from tapstream.core import records
from tapstream.core.codec import make_codec
from tapstream.core.codec.schemas import RECORDS, current
from tapstream.core.settings import TapstreamSettings

from ..codec.samples import SAMPLES

PRIMITIVE = {
    "string": str,
    "long": int,
    "int": int,
    "boolean": bool,
    "double": float,
    "float": float,
    "bytes": bytes,
}


def python_type(avro: Any) -> Any:
    """The annotation a TypedDict field of this Avro type must have."""
    if isinstance(avro, str):
        return PRIMITIVE[avro]
    if isinstance(avro, list):
        if all(isinstance(b, dict) and b.get("type") == "record" for b in avro):
            return tuple[str, dict[str, Any]]  # DiskEvent.body: (branch, fields)
        branches = [b for b in avro if b != "null"]
        assert len(branches) == 1, f"no rule for the union {avro}"
        return python_type(branches[0]) | None if "null" in avro else python_type(branches[0])
    kind = avro["type"]
    if kind == "array":
        return list[python_type(avro["items"])]  # type: ignore[misc]
    if kind == "map":
        return dict[str, python_type(avro["values"])]  # type: ignore[misc]
    if kind == "enum":
        return str  # decoded as its symbol
    return python_type(kind)  # a primitive with a logical type: timestamps are int µs


def check(typed: Any, schema: dict[str, Any]) -> None:
    name = schema["name"]
    fields = schema["fields"]
    hints = typing.get_type_hints(typed)
    assert list(hints) == [f["name"] for f in fields], f"{name}: fields or their order differ"
    assert typed.__required_keys__ == {f["name"] for f in fields if "default" not in f}, name
    assert typed.__optional_keys__ == {f["name"] for f in fields if "default" in f}, name
    for f in fields:
        assert hints[f["name"]] == python_type(f["type"]), f"{name}.{f['name']}"


def schema_of(name: str) -> dict[str, Any]:
    return current()[name].raw


def body_branches() -> list[dict[str, Any]]:
    body = next(f for f in schema_of("DiskEvent")["fields"] if f["name"] == "body")
    return list(body["type"])


def enums(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [e for n in node for e in enums(n)]
    if isinstance(node, dict):
        own = [node] if node.get("type") == "enum" else []
        return own + [e for v in node.values() for e in enums(v)]
    return []


@pytest.mark.parametrize("name", RECORDS)
def test_each_record_matches_its_schema(name: str) -> None:
    check(records.RECORDS[name], schema_of(name))


def test_every_record_is_typed() -> None:
    assert list(records.RECORDS) == list(RECORDS)


def test_each_body_branch_matches_its_schema() -> None:
    branches = body_branches()
    assert list(records.BODIES) == [b["name"] for b in branches]  # union order, append only
    for branch in branches:
        check(records.BODIES[branch["name"]], branch)


def test_each_enum_matches_its_symbols() -> None:
    found = {e["name"]: e["symbols"] for n in RECORDS for e in enums(schema_of(n))}
    assert set(found) == set(records.ENUMS)
    for name, symbols in found.items():
        assert [s.value for s in records.ENUMS[name]] == symbols, name


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_a_decoded_record_has_exactly_its_typed_keys(case: str) -> None:
    name, record = SAMPLES[case]
    codec = make_codec(TapstreamSettings())
    got_name, got = codec.decode(codec.encode(name, record))
    assert got_name == name and set(got) == set(typing.get_type_hints(records.RECORDS[name]))
    if name == "DiskEvent":
        branch, body = got["body"]
        assert set(body) == set(typing.get_type_hints(records.BODIES[branch]))


def test_a_command_built_with_the_enum_encodes_as_its_symbol() -> None:
    codec = make_codec(TapstreamSettings())
    command: records.Command = {
        "id": "c1",
        "group": "g1",
        "kind": records.CommandKind.CHECKPOINT_TAG,
        "sender": "test",
        "ts": 1,
    }
    _, got = codec.decode(codec.encode("Command", dict(command)))
    assert got["kind"] == "CHECKPOINT_TAG" and type(got["kind"]) is str
    assert got["args"] == {} and got["key_id"] is None  # defaults filled in


def test_each_progress_source_is_one_the_schema_names() -> None:
    doc = next(f for f in schema_of("Progress")["fields"] if f["name"] == "source")["doc"]
    assert all(source.value in doc for source in records.ProgressSource)

"""Schema evolution, both ways, for every record type.

`fixtures/v1/` holds the schemas as first published (frozen: never edit them). Current readers
read v1 writers' events and v1 readers read current writers' events; an incompatible edit of a
current schema fails here. A synthetic next version (a defaulted field, a defaulted field in a
branch, an appended union branch, an appended enum symbol) shows the rules of schemas/README.md.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from hypothesis import given, settings
from hypothesis import strategies as st

from tapstream.core.codec.schemas import RECORDS, build, current, schema_dir, without_logical_types
from tapstream.core.codec.single_object import MAGIC, SingleObjectCodec

from .strategies import CASES

V1 = {
    n: json.loads((Path(__file__).parent / "fixtures" / "v1" / f"{n}.avsc").read_text())
    for n in RECORDS
}
CURRENT = {n: s.raw for n, s in current().items()}


def write(record: dict[str, Any], schema: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(
        buf, parse_schema(without_logical_types(schema), named_schemas={}), qualified(record)
    )
    return buf.getvalue()


def read(data: bytes, writer: dict[str, Any], reader: dict[str, Any]) -> dict[str, Any]:
    parse = lambda s: parse_schema(without_logical_types(s), named_schemas={})  # noqa: E731
    record = schemaless_reader(
        io.BytesIO(data), parse(writer), parse(reader), return_record_name=True
    )
    if isinstance(record.get("body"), tuple):
        record["body"] = (record["body"][0].rsplit(".", 1)[-1], record["body"][1])
    return record


def qualified(record: dict[str, Any]) -> dict[str, Any]:
    if isinstance(record.get("body"), tuple):
        return {**record, "body": (f"io.tapstream.{record['body'][0]}", record["body"][1])}
    return record


def record_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{record name: {field name: field}} for the top record and each union branch record."""
    out = {schema["name"]: {f["name"]: f for f in schema["fields"]}}
    for f in schema["fields"]:
        if isinstance(f["type"], list):
            out |= {
                b["name"]: {g["name"]: g for g in b["fields"]}
                for b in f["type"]
                if isinstance(b, dict)
            }
    return out


def as_read_by(record: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """What a reader with `schema` must see: its fields only, missing ones at their default."""
    fields = record_fields(schema)

    def fit(rec: dict[str, Any], name: str) -> dict[str, Any]:
        return {k: rec[k] if k in rec else f["default"] for k, f in fields[name].items()}

    out = fit(record, schema["name"])
    if isinstance(out.get("body"), tuple):
        out["body"] = (out["body"][0], fit(out["body"][1], out["body"][0]))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_current_reader_reads_v1_writer(case: str, data: st.DataObject) -> None:
    name, strategy = CASES[case]
    old = as_read_by(data.draw(strategy), V1[name])  # a record as a v1 writer had it
    assert read(write(old, V1[name]), V1[name], CURRENT[name]) == as_read_by(old, CURRENT[name])


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_v1_reader_reads_current_writer(case: str, data: st.DataObject) -> None:
    name, strategy = CASES[case]
    record = data.draw(strategy)
    assert read(write(record, CURRENT[name]), CURRENT[name], V1[name]) == as_read_by(
        record, V1[name]
    )


def test_the_codec_reads_v1_events_by_fingerprint() -> None:
    # The real evolution so far: Checkpoint.volume_size; v1 lives in schemas/history.
    old = (Path(__file__).parent / "golden" / "v1" / "DiskEvent-Checkpoint.bin").read_bytes()
    name, record = SingleObjectCodec().decode(old)
    assert name == "DiskEvent" and record["body"][0] == "Checkpoint"
    assert record["body"][1]["volume_size"] == 0 and record["body"][1]["tag"] == "before-upgrade"


def test_the_codec_reads_v1_domain_events_without_an_actor() -> None:
    # DomainEvent v2 records the actor; events written before it read as actor None.
    from tapstream.site_manager.domain import Recorded

    old = (Path(__file__).parent / "golden" / "v1" / "DomainEvent.bin").read_bytes()
    name, record = SingleObjectCodec().decode(old)
    assert name == "DomainEvent" and record["actor"] is None and record["aggregate_id"] == "pg1"
    rec = Recorded.from_record({**record, "type": "GroupCreated"})
    assert rec.actor is None and rec.event.name == "pg1"  # type: ignore[attr-defined]


def test_every_changed_schema_keeps_its_v1_in_history() -> None:
    history = {
        build(p.name.split(".")[0], json.loads(p.read_text())).fingerprint
        for p in (schema_dir() / "history").glob("*.avsc")
    }
    for name in RECORDS:
        v1 = build(name, V1[name])
        assert v1.fingerprint == current()[name].fingerprint or v1.fingerprint in history, (
            f"{name} changed since v1 but schemas/history has no copy of v1: v1 events would be unreadable"
        )


# --- a synthetic next version: what the evolution rules allow -------------------------------------


def next_version(name: str) -> dict[str, Any]:
    nxt = copy.deepcopy(CURRENT[name])
    nxt["fields"].append({"name": "tenant", "type": ["null", "string"], "default": None})
    if name == "DiskEvent":
        body = next(f for f in nxt["fields"] if f["name"] == "body")
        write_ = next(b for b in body["type"] if b["name"] == "Write")
        write_["fields"].append({"name": "compressed", "type": "boolean", "default": False})
        body["type"].append(
            {"type": "record", "name": "Discard", "fields": [{"name": "offset", "type": "long"}]}
        )
    if name == "Command":
        kind = next(f for f in nxt["fields"] if f["name"] == "kind")
        kind["type"]["symbols"].append("SNAPSHOT")
    return nxt


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_current_and_next_read_each_other(case: str, data: st.DataObject) -> None:
    name, strategy = CASES[case]
    record, nxt = data.draw(strategy), next_version(name)
    newer = as_read_by({**record, "tenant": "blue"}, nxt)
    if isinstance(newer.get("body"), tuple) and newer["body"][0] == "Write":
        newer["body"][1]["compressed"] = True
    assert read(write(newer, nxt), nxt, CURRENT[name]) == record  # old reader, new writer
    assert read(write(record, CURRENT[name]), CURRENT[name], nxt) == as_read_by(
        record, nxt
    )  # the reverse


def test_an_old_reader_reads_an_unknown_command_kind_as_unknown() -> None:
    from .samples import SAMPLES

    record = {**SAMPLES["Command"][1], "kind": "SNAPSHOT"}
    got = read(write(record, next_version("Command")), next_version("Command"), CURRENT["Command"])
    assert got["kind"] == "UNKNOWN" and got["id"] == record["id"]


def test_an_old_reader_cannot_read_a_branch_it_does_not_know() -> None:
    # Avro's rule: an unknown union branch is a resolution error. Readers are upgraded before
    # writers emit a new kind of event (schemas/README.md); this test documents that order.
    record = {
        "volume": "v",
        "seq": 1,
        "ts": 1,
        "host": "h",
        "group": "g",
        "body": ("Discard", {"offset": 1}),
    }
    data = write(record, next_version("DiskEvent"))
    with pytest.raises(SchemaResolutionError, match=r"io\.tapstream\.Discard"):
        read(data, next_version("DiskEvent"), CURRENT["DiskEvent"])


def test_the_codec_reads_an_older_writer_given_its_schema() -> None:
    # What a file in schemas/history/ does: an unknown fingerprint becomes readable.
    old = build("DiskEvent", V1["DiskEvent"])
    flushless = copy.deepcopy(V1["DiskEvent"])
    body = next(f for f in flushless["fields"] if f["name"] == "body")
    next(b for b in body["type"] if b["name"] == "Flush")["fields"] = []
    older = build("DiskEvent", flushless)
    record = {"volume": "v", "seq": 3, "ts": 4, "host": "h", "group": "g", "body": ("Flush", {})}
    data = MAGIC + older.fingerprint + write(record, flushless)
    from tapstream.core.codec import DecodeError

    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        SingleObjectCodec().decode(data)
    got = SingleObjectCodec(extra_writers=[older, old]).decode(data)
    assert got == ("DiskEvent", {**record, "body": ("Flush", {"fua": False})})


# --- the real evolutions: each schemas/history/<Name>.v<N>.avsc and the current one ---------------

HISTORY = sorted((schema_dir() / "history").glob("*.avsc"))


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.stem)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_history_and_current_read_each_other(path: Path, data: st.DataObject) -> None:
    name, old = path.name.split(".")[0], json.loads(path.read_text())
    cases = [s for n, s in CASES.values() if n == name]
    record = data.draw(st.sampled_from(cases).flatmap(lambda s: s))
    older = as_read_by(record, old)  # what that version's writer had
    assert read(write(older, old), old, CURRENT[name]) == as_read_by(older, CURRENT[name])
    assert read(write(record, CURRENT[name]), CURRENT[name], old) == older


def test_a_v2_reader_reads_a_signed_command_and_v3_reads_an_unsigned_one() -> None:
    from .samples import SAMPLES

    v2 = json.loads((schema_dir() / "history" / "Command.v2.avsc").read_text())
    signed = SAMPLES["Command"][1]
    assert signed["signature"] and signed["key_id"]
    got = read(write(signed, CURRENT["Command"]), CURRENT["Command"], v2)
    assert "signature" not in got and got == {
        k: v for k, v in signed.items() if k not in ("key_id", "signature")
    }
    old = read(write(got, v2), v2, CURRENT["Command"])
    assert old["key_id"] is None and old["signature"] is None and old["id"] == signed["id"]

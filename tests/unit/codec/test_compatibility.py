"""Schema evolution: a v2 DiskEvent (a new defaulted field, a new union branch appended) stays
readable by v1 readers for the branches they know, and v2 readers read v1 events."""

from __future__ import annotations

import copy
import io
import json

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from tapstream.core.codec import DecodeError
from tapstream.core.codec.schemas import schema_dir, without_logical_types
from tapstream.core.codec.single_object import SingleObjectCodec

from .samples import SAMPLES

V1 = json.loads((schema_dir() / "DiskEvent.avsc").read_text())


def v2_schema() -> dict:
    v2 = copy.deepcopy(V1)
    body = next(f for f in v2["fields"] if f["name"] == "body")
    write = next(b for b in body["type"] if b["name"] == "Write")
    write["fields"].append({"name": "compressed", "type": "boolean", "default": False})
    body["type"].append({"type": "record", "name": "Discard", "fields": [{"name": "offset", "type": "long"}]})
    v2["fields"].append({"name": "tenant", "type": ["null", "string"], "default": None})
    return v2


def parse(schema: dict):
    return parse_schema(without_logical_types(schema), named_schemas={})


def roundtrip(record: dict, writer: dict, reader: dict) -> dict:
    buf = io.BytesIO()
    schemaless_writer(buf, parse(writer), record)
    buf.seek(0)
    return schemaless_reader(buf, parse(writer), parse(reader), return_record_name=True)


def qualified(record: dict) -> dict:
    name, fields = record["body"]
    return copy.deepcopy({**record, "body": (f"io.tapstream.{name}", fields)})


@pytest.mark.parametrize("key", [k for k in SAMPLES if k.startswith("DiskEvent")])
def test_old_reader_reads_new_writer(key: str) -> None:
    record = qualified(SAMPLES[key][1])
    if record["body"][0].endswith("Write"):
        record["body"][1]["compressed"] = True
    record = {**record, "tenant": "blue"}
    got = roundtrip(record, v2_schema(), V1)
    assert "tenant" not in got and got["seq"] == record["seq"]
    assert "compressed" not in got["body"][1]


@pytest.mark.parametrize("key", [k for k in SAMPLES if k.startswith("DiskEvent")])
def test_new_reader_reads_old_writer(key: str) -> None:
    record = qualified(SAMPLES[key][1])
    got = roundtrip(record, V1, v2_schema())
    assert got["tenant"] is None
    if got["body"][0].endswith("Write"):
        assert got["body"][1]["compressed"] is False


def test_old_reader_cannot_read_a_branch_it_does_not_know() -> None:
    # Avro's rule: an unknown union branch is a resolution error. Readers must be upgraded before
    # writers emit a new kind of event; this test documents that order.
    record = {**qualified(SAMPLES["DiskEvent-Write"][1]), "body": ("io.tapstream.Discard", {"offset": 1})}
    with pytest.raises(Exception):
        roundtrip(record, v2_schema(), V1)


def test_codec_reads_events_of_an_older_schema_version_from_history() -> None:
    # An older DiskEvent without Flush.fua: the codec finds it by fingerprint and fills the default.
    v0 = copy.deepcopy(V1)
    flush = next(b for b in next(f for f in v0["fields"] if f["name"] == "body")["type"] if b["name"] == "Flush")
    flush["fields"] = []
    from tapstream.core.codec.schemas import _build

    old = _build("DiskEvent", v0)
    codec = SingleObjectCodec()
    header = {k: v for k, v in SAMPLES["DiskEvent-Flush"][1].items() if k != "body"}
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + old.fingerprint)
    schemaless_writer(buf, old.parsed, {**header, "body": ("io.tapstream.Flush", {})})
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(buf.getvalue())  # not in history yet
    codec._known[old.fingerprint] = old  # what a file in schemas/history/ does
    assert codec.decode(buf.getvalue()) == ("DiskEvent", {**header, "body": ("Flush", {"fua": False})})


def test_v1_checkpoint_events_stay_readable_after_volume_size_was_added() -> None:
    # A real evolution: Checkpoint.volume_size arrived in v2; the v1 schema lives in schemas/history.
    from pathlib import Path

    old = (Path(__file__).parent / "golden" / "v1" / "DiskEvent-Checkpoint.bin").read_bytes()
    name, record = SingleObjectCodec().decode(old)
    assert name == "DiskEvent" and record["body"][0] == "Checkpoint"
    assert record["body"][1]["volume_size"] == 0 and record["body"][1]["tag"] == "before-upgrade"

"""Loads our Avro schemas (`schemas/*.avsc`, and older versions under `schemas/history/`).

Found in the repository beside the package, or in the wheel's `tapstream/_schemas` folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

NAMESPACE = "io.tapstream"
RECORDS = ("DiskEvent", "Command", "DomainEvent", "Alert", "Progress")


def schema_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[4] / "schemas", here.parents[2] / "_schemas"):
        if (candidate / "DiskEvent.avsc").exists():
            return candidate
    raise FileNotFoundError("tapstream schemas not found (looked for schemas/ and tapstream/_schemas/)")


@dataclass(frozen=True)
class Schema:
    name: str  # short name, e.g. "DiskEvent"
    parsed: Any  # fastavro parsed schema
    reader: Any  # the same without logical types: timestamps read back as int microseconds
    canonical: str
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, 8 bytes little-endian (single-object)


def _build(name: str, raw: dict[str, Any]) -> Schema:
    parsed = parse_schema(raw, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    fp = int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
    reader = parse_schema(without_logical_types(raw), named_schemas={})
    return Schema(name=name, parsed=parsed, reader=reader, canonical=canonical, fingerprint=fp)


def without_logical_types(node: Any) -> Any:
    # Services compute with int microseconds; datetimes would make decode(encode(x)) != x.
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical_types(v) for v in node]
    return node


@cache
def current() -> dict[str, Schema]:
    """The schemas this code writes, by short name."""
    d = schema_dir()
    return {n: _build(n, json.loads((d / f"{n}.avsc").read_text())) for n in RECORDS}


@cache
def by_fingerprint() -> dict[bytes, Schema]:
    """Every schema this code can read: the current ones and the history of older versions."""
    known = {s.fingerprint: s for s in current().values()}
    history = schema_dir() / "history"
    if history.is_dir():
        for path in sorted(history.glob("*.avsc")):
            name = path.name.split(".")[0]
            old = _build(name, json.loads(path.read_text()))
            known.setdefault(old.fingerprint, old)
    return known

"""Loads our Avro schemas (`schemas/*.avsc`, and older versions under `schemas/history/`).

Found in the wheel's `tapstream/_schemas` folder, or in the repository beside the package
(editable install). Each file holds one self-contained record (named types such as `SyncKind` are
defined inline), so a registry can take it without schema references.
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


def schema_dir(module_file: str | Path = __file__) -> Path:
    """The folder holding `DiskEvent.avsc` & co., for this module installed either way."""
    here = Path(module_file).resolve()
    # wheel: tapstream/core/codec/schemas.py -> tapstream/_schemas
    # repo:  lib/tapstream/core/codec/schemas.py -> schemas/
    candidates = (here.parents[2] / "_schemas", here.parents[4] / "schemas")
    for candidate in candidates:
        if (candidate / "DiskEvent.avsc").is_file():
            return candidate
    raise FileNotFoundError(
        "tapstream schemas not found (looked in " + ", ".join(str(c) for c in candidates) + "); "
        "reinstall the package (`make setup`) or rebuild the wheel"
    )


@dataclass(frozen=True)
class Schema:
    name: str  # short name, e.g. "DiskEvent"
    raw: dict[
        str, Any
    ]  # the .avsc as written (docs, defaults, logical types): what a registry gets
    parsed: Any  # fastavro parsed schema (writes ints or datetimes for timestamp-micros)
    reader: Any  # the same without logical types: timestamps read back as int microseconds
    canonical: str  # Parsing Canonical Form (what the fingerprint is taken of)
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, 8 bytes little-endian (single-object)

    @property
    def json(self) -> str:
        """The full schema as compact JSON, for a schema registry."""
        return json.dumps(self.raw, separators=(",", ":"))


def build(name: str, raw: dict[str, Any]) -> Schema:
    """Parse one schema and compute its canonical form and fingerprint."""
    parsed = parse_schema(raw, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    fp = int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
    reader = parse_schema(without_logical_types(raw), named_schemas={})
    return Schema(
        name=name, raw=raw, parsed=parsed, reader=reader, canonical=canonical, fingerprint=fp
    )


_build = build  # older name, kept for callers of the first version


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
    return {n: build(n, json.loads((d / f"{n}.avsc").read_text())) for n in RECORDS}


@cache
def by_fingerprint() -> dict[bytes, Schema]:
    """Every schema this code can read: the current ones and the history of older versions."""
    known = {s.fingerprint: s for s in current().values()}
    history = schema_dir() / "history"
    if history.is_dir():
        for path in sorted(history.glob("*.avsc")):
            name = path.name.split(".")[0]
            old = build(name, json.loads(path.read_text()))
            known.setdefault(old.fingerprint, old)
    return known

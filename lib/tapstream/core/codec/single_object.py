"""Avro single-object encoding: C3 01, the schema's 8-byte CRC-64-AVRO fingerprint, then the body.

Self-describing without a registry: a reader finds the writer's schema by its fingerprint among the
schemas it knows (current and `schemas/history/`) and resolves it to its own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from tapstream.core.codec.base import AvroCodec, read_body, write_record
from tapstream.core.codec.exceptions import DecodeError
from tapstream.core.codec.schemas import Schema, by_fingerprint

MAGIC = b"\xc3\x01"
HEADER = len(MAGIC) + 8

__all__ = ["HEADER", "MAGIC", "SingleObjectCodec", "read_body", "write_record"]


class SingleObjectCodec(AvroCodec):
    def __init__(self, extra_writers: Iterable[Schema] = ()) -> None:
        """`extra_writers`: older schemas to read besides schemas/history (tests use it)."""
        super().__init__()
        self._prefixes = {n: MAGIC + s.fingerprint for n, s in self._schemas.items()}
        self._known = dict(by_fingerprint())
        for schema in extra_writers:
            self._known.setdefault(schema.fingerprint, schema)

    def _prefix(self, name: str) -> bytes:
        return self._prefixes[name]

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return (record type, record); DecodeError on bad bytes."""
        if len(data) < HEADER or data[:2] != MAGIC:
            if data[:1] == b"\x00" and len(data) >= 5:
                (schema_id,) = struct.unpack(">I", data[1:5])
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}): "
                    "set TAPSTREAM_SCHEMA_REGISTRY_URL to decode it"
                )
            raise DecodeError("not Avro single-object encoding (expected C3 01 and a fingerprint)")
        fp = bytes(data[2:HEADER])
        writer = self._known.get(fp)
        if writer is None:
            raise DecodeError(
                f"unknown schema fingerprint {fp.hex()} (written by a newer tapstream?)"
            )
        reader = self._schemas.get(writer.name)
        if reader is writer:  # the common case: written with our own schema, no resolution
            return writer.name, read_body(data, HEADER, writer.reader, None)
        return writer.name, read_body(data, HEADER, writer.reader, (reader or writer).reader)

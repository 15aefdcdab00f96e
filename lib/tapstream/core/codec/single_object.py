"""Avro single-object encoding: C3 01, the schema's 8-byte CRC-64-AVRO fingerprint, then the body.

Self-describing without a registry: a reader finds the writer's schema by its fingerprint among the
schemas it knows (current and history) and resolves it to its own.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from tapstream.core.codec.exceptions import DecodeError, EncodeError
from tapstream.core.codec.schemas import NAMESPACE, by_fingerprint, current

MAGIC = b"\xc3\x01"
HEADER = len(MAGIC) + 8


class SingleObjectCodec:
    def __init__(self) -> None:
        self._schemas = current()
        self._known = by_fingerprint()
        self._prefix = {n: MAGIC + s.fingerprint for n, s in self._schemas.items()}

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return write_record(self._prefix[name], self._schemas[name].parsed, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < HEADER or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (expected C3 01 and a fingerprint)")
        writer = self._known.get(bytes(data[2:HEADER]))
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {bytes(data[2:HEADER]).hex()}")
        reader = self._schemas.get(writer.name, writer)
        return writer.name, read_body(data, HEADER, writer.reader, reader.reader)


def write_record(prefix: bytes, parsed: Any, record: dict[str, Any]) -> bytes:
    """`prefix` followed by the Avro body. A union branch is given as (short or full name, dict)."""
    body = record.get("body")
    if isinstance(body, tuple) and "." not in body[0]:
        record = {**record, "body": (f"{NAMESPACE}.{body[0]}", body[1])}
    buf = io.BytesIO()
    buf.write(prefix)
    try:
        schemaless_writer(buf, parsed, record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EncodeError(f"record does not fit its schema: {exc!r}") from None
    return buf.getvalue()


def read_body(data: bytes, start: int, writer: Any, reader: Any) -> dict[str, Any]:
    """Decode the Avro body, turning every failure (truncation, bad varint, bad union) into DecodeError."""
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        record = schemaless_reader(buf, writer, reader, return_record_name=True)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ... on bad bytes
        raise DecodeError(f"malformed Avro body: {exc!r}") from None
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the record")
    if not isinstance(record, dict):
        raise DecodeError("record expected")
    body = record.get("body")
    if isinstance(body, tuple):  # the union branch, named without our namespace
        record["body"] = (body[0].rsplit(".", 1)[-1], body[1])
    return record

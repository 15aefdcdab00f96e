"""What both encodings share: record dicts in, record dicts out, one fast path for Write events.

A union branch (DiskEvent.body) is given as a `(branch, fields)` tuple, branch being the short
record name ("Write") or the full one ("io.tapstream.Write"); decode returns the short name, so
decode(encode(x)) == x. Timestamps are int microseconds both ways (encode also takes datetimes).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from tapstream.core.codec.exceptions import DecodeError, EncodeError
from tapstream.core.codec.fast_write import Data, DataEncoder, check_layout
from tapstream.core.codec.schemas import NAMESPACE, Schema, current


class AvroCodec:
    """Base of SingleObjectCodec and ConfluentCodec; subclasses give the prefix and decode."""

    def __init__(self) -> None:
        self._schemas = current()
        try:
            check_layout(self._schemas["DiskEvent"].parsed)
        except AssertionError as exc:
            raise EncodeError(str(exc)) from None

    def _prefix(self, name: str) -> bytes:
        raise NotImplementedError

    def _schema(self, name: str) -> Schema:
        schema = self._schemas.get(name)
        if schema is None:
            raise EncodeError(f"unknown record type {name!r}; one of {', '.join(self._schemas)}")
        return schema

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode `record` with the current schema called `name` (e.g. "DiskEvent")."""
        schema = self._schema(name)
        return write_record(self._prefix(name), schema.parsed, record)

    def encode_write(
        self,
        volume: str,
        seq: int,
        ts: int,
        host: str,
        group: str,
        offset: int,
        data: Data,
        checksum: int | None = None,
        sync_id: str | None = None,
    ) -> bytes:
        """A DiskEvent with a Write body (a SyncBlock body when `sync_id` is given), without dicts.

        Same bytes as encode("DiskEvent", ...) with length=len(data) and checksum=crc32c(data)
        unless given. `data` may be a memoryview; it is copied once, into the result.
        """
        encoder = DataEncoder(self._prefix("DiskEvent"), volume, host, group)
        return encoder.encode(seq, ts, offset, data, checksum, sync_id)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def decode_as(self, data: bytes, name: str) -> dict[str, Any]:
        """Decode and check the record type: a DecodeError if it is not a `name`."""
        got, record = self.decode(data)
        if got != name:
            raise DecodeError(f"expected a {name}, got a {got}")
        return record


def write_record(prefix: bytes, parsed: Any, record: Mapping[str, Any]) -> bytes:
    """`prefix` followed by the Avro body of `record`."""
    body = record.get("body")
    if isinstance(body, tuple):
        if len(body) != 2 or not isinstance(body[0], str):
            raise EncodeError("a union branch is given as (branch name, fields dict)")
        if "." not in body[0]:
            record = {**record, "body": (f"{NAMESPACE}.{body[0]}", body[1])}
    elif isinstance(body, dict) and "-type" not in body:
        # fastavro would pick the first branch the dict fits: a SyncBlock could become a Write.
        raise EncodeError('DiskEvent.body must name its branch: ("Write", {...})')
    buf = io.BytesIO()
    buf.write(prefix)
    try:
        schemaless_writer(buf, parsed, record)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"record does not fit its schema: {exc!r}") from None
    return buf.getvalue()


def read_body(data: bytes, start: int, writer: Any, reader: Any | None) -> dict[str, Any]:
    """Decode the Avro body (resolving `writer` to `reader` unless None: the same schema).

    Every failure (truncation, bad varint, bad union index, bad UTF-8) becomes DecodeError.
    """
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        record = schemaless_reader(buf, writer, reader, return_record_name=True)
    except SchemaResolutionError as exc:  # e.g. a union branch added after this code was built
        raise DecodeError(
            f"written with a newer schema this code cannot read (upgrade): {str(exc)[:200]}"
        ) from None
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ... on bad bytes
        raise DecodeError(f"malformed Avro body: {repr(exc)[:200]}") from None
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the record")
    if not isinstance(record, dict):
        raise DecodeError("record expected")
    body = record.get("body")
    if isinstance(body, tuple):  # the union branch, named without our namespace
        record["body"] = (body[0].rsplit(".", 1)[-1], body[1])
    return record

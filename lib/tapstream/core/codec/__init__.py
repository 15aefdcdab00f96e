"""The one Avro codec every service uses (see schemas/README.md for the wire contract).

    codec = make_codec(settings)
    data = codec.encode("DiskEvent", {"volume": "v1", ..., "body": ("Write", {...})})
    name, record = codec.decode(data)   # DecodeError on bad bytes

Single-object encoding by default; Confluent wire format when `schema_registry_url` is set.
`decode_any` reads either (by the first byte), which is what `tapstream tail` needs.
"""

from __future__ import annotations

from typing import Any, Protocol

from tapstream.core.codec.exceptions import DecodeError, EncodeError, RegistryUnavailable
from tapstream.core.codec.schemas import RECORDS, current
from tapstream.core.codec.single_object import SingleObjectCodec
from tapstream.core.settings import TapstreamSettings

SCHEMAS = RECORDS


class Codec(Protocol):
    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode `record` with the current schema called `name` (e.g. "DiskEvent")."""

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return (schema short name, record) or raise DecodeError."""


def make_codec(settings: TapstreamSettings) -> Codec:
    if settings.schema_registry_url:
        from tapstream.core.codec.confluent import ConfluentCodec, RegistryClient

        return ConfluentCodec(RegistryClient(settings.schema_registry_url))
    return SingleObjectCodec()


def decode_as(codec: Codec, data: bytes, name: str) -> dict[str, Any]:
    """Decode and check the record type."""
    got, record = codec.decode(data)
    if got != name:
        raise DecodeError(f"expected a {name}, got a {got}")
    return record


def decode_any(data: bytes, settings: TapstreamSettings | None = None) -> tuple[str, dict[str, Any]]:
    """Decode either encoding, chosen by the first byte (C3: single-object, 00: Confluent)."""
    if data[:1] == b"\x00":
        if settings is None or not settings.schema_registry_url:
            raise DecodeError("Confluent wire format needs TAPSTREAM_SCHEMA_REGISTRY_URL to find the schema")
        return make_codec(settings).decode(data)
    return SingleObjectCodec().decode(data)


__all__ = [
    "SCHEMAS",
    "Codec",
    "DecodeError",
    "EncodeError",
    "RegistryUnavailable",
    "current",
    "decode_any",
    "decode_as",
    "make_codec",
]

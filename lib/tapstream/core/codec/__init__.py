"""The one Avro codec every service uses (see schemas/README.md for the wire contract).

    codec = make_codec(settings)
    data = codec.encode("DiskEvent", {"volume": "v1", "seq": 1, "ts": micros, "host": "h",
                                      "group": "g", "body": ("Write", {...})})
    name, record = codec.decode(data)           # DecodeError on bad bytes
    record = codec.decode_as(data, "Command")   # ... or when it is another record type
    data = codec.encode_write(volume, seq, ts, host, group, offset, payload)  # hot path

Single-object encoding by default; Confluent wire format when `schema_registry_url` is set.
A union branch is a `(branch name, fields)` tuple both ways; timestamps are int microseconds.
A Confluent codec also reads single-object bytes; `decode_any` reads either encoding by its first
byte with a codec cached per registry URL, which is what `tapstream tail` needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol

from tapstream.core.codec.exceptions import (
    DecodeError,
    EncodeError,
    RegistryError,
    RegistryUnavailable,
)
from tapstream.core.codec.fast_write import Data
from tapstream.core.codec.schemas import RECORDS, current
from tapstream.core.codec.single_object import SingleObjectCodec
from tapstream.core.settings import TapstreamSettings

SCHEMAS = RECORDS  # the record types: DiskEvent, Command, DomainEvent, Alert, Progress


class Codec(Protocol):
    """Record dicts to bytes and back, in one of the two encodings."""

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode `record` (a dict, or a core.records TypedDict) with the current schema called
        `name` (e.g. "DiskEvent"); EncodeError
        if it does not fit; RegistryUnavailable if the registry must be asked and cannot be."""
        ...

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
        """A Write DiskEvent (SyncBlock with `sync_id`) straight from arguments; checksum
        defaults to crc32c(data). Same bytes as encode()."""
        ...

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return (record type, record) or raise DecodeError (RegistryUnavailable: retry later)."""
        ...

    def decode_as(self, data: bytes, name: str) -> dict[str, Any]:
        """decode(), and a DecodeError unless the record is a `name`."""
        ...


def make_codec(settings: TapstreamSettings) -> Codec:
    """Single-object codec, or a Confluent one when TAPSTREAM_SCHEMA_REGISTRY_URL is set."""
    if settings.schema_registry_url:
        return _confluent(settings.schema_registry_url, settings.schema_registry_timeout_s)
    return SingleObjectCodec()


def _confluent(url: str, timeout_s: float) -> Codec:
    from tapstream.core.codec.confluent import ConfluentCodec, RegistryClient

    return ConfluentCodec(RegistryClient(url, timeout_s))


@lru_cache(maxsize=8)
def _reader(url: str | None, timeout_s: float) -> Codec:
    return SingleObjectCodec() if url is None else _confluent(url, timeout_s)


def decode_any(
    data: bytes, settings: TapstreamSettings | None = None
) -> tuple[str, dict[str, Any]]:
    """Decode either encoding, chosen by the first byte (C3: single-object, 00: Confluent, which
    needs `settings.schema_registry_url`). Codecs are cached, so schema ids are fetched once."""
    url = settings.schema_registry_url if settings is not None else None
    timeout_s = settings.schema_registry_timeout_s if settings is not None else 5.0
    return _reader(url or None, timeout_s).decode(data)


def decode_as(codec: Codec, data: bytes, name: str) -> dict[str, Any]:
    """Function form of `codec.decode_as(data, name)` (kept for early callers)."""
    return codec.decode_as(data, name)


__all__ = [
    "SCHEMAS",
    "Codec",
    "DecodeError",
    "EncodeError",
    "RegistryError",
    "RegistryUnavailable",
    "current",
    "decode_any",
    "decode_as",
    "make_codec",
]

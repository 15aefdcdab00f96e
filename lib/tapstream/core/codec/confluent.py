"""Confluent wire format (magic 0, 4-byte big-endian schema id, body) with a schema registry.

Subjects follow the record-name strategy (`io.tapstream.DiskEvent`), so one subject per record
type whatever the topic. The full schema (docs, defaults, logical types) is registered, so the
registry's compatibility checks and other tools see what the .avsc says. Ids are cached both
ways: the registry is asked once per schema per process. Every request has a short timeout.

Errors: bytes naming an id the registry does not know -> DecodeError (bad bytes); a registry that
does not answer -> RegistryUnavailable (the bytes may be fine: a consumer must not skip them).
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

import httpx
from fastavro import parse_schema

from tapstream.core.codec.base import AvroCodec, read_body
from tapstream.core.codec.exceptions import DecodeError, RegistryError, RegistryUnavailable
from tapstream.core.codec.schemas import NAMESPACE, without_logical_types
from tapstream.core.codec.single_object import MAGIC as SINGLE_OBJECT_MAGIC
from tapstream.core.codec.single_object import SingleObjectCodec

MAGIC = b"\x00"
HEADER = 5
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaNotFound(RegistryError):
    """The registry answered 404 for a schema id."""


class RegistryClient:
    """The two registry endpoints the codec needs, over HTTP with a short timeout."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        parsed = httpx.URL(self.url)
        self.shown_url = (
            str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else self.url
        )
        self._http = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(timeout_s), headers={"Accept": CONTENT_TYPE}
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry {self.shown_url} did not answer ({exc.__class__.__name__}: {exc}); "
                "start it, fix TAPSTREAM_SCHEMA_REGISTRY_URL, or unset it to use single-object encoding"
            ) from None
        detail = (
            f"schema registry {self.shown_url}{path} answered {resp.status_code}: {resp.text[:300]}"
        )
        if resp.status_code >= 500:
            raise RegistryUnavailable(detail)
        if resp.status_code == 404:
            raise SchemaNotFound(detail)
        if resp.status_code >= 400:
            raise RegistryError(detail)
        try:
            return resp.json()
        except ValueError:
            raise RegistryError(
                f"schema registry {self.shown_url}{path} answered non-JSON: {resp.text[:300]}"
            ) from None

    def register(self, subject: str, schema: str) -> int:
        """POST /subjects/{subject}/versions: the id of `schema` (registered if new)."""
        body = {"schemaType": "AVRO", "schema": schema}
        return int(
            self._call(
                "POST",
                f"/subjects/{subject}/versions",
                json=body,
                headers={"Content-Type": CONTENT_TYPE},
            )["id"]
        )

    def schema(self, schema_id: int) -> str:
        """GET /schemas/ids/{id}: the schema text."""
        return str(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])

    def close(self) -> None:
        self._http.close()


class ConfluentCodec(AvroCodec):
    def __init__(self, registry: RegistryClient) -> None:
        super().__init__()
        self._registry = registry
        self._ids: dict[str, bytes] = {}
        self._writers: dict[int, tuple[str, Any]] = {}
        self._lock = threading.Lock()
        self._single = SingleObjectCodec()  # events written without a registry stay readable

    def _prefix(self, name: str) -> bytes:
        prefix = self._ids.get(name)
        if prefix is None:
            schema = self._schema(name)
            schema_id = self._registry.register(f"{NAMESPACE}.{name}", schema.json)
            prefix = MAGIC + struct.pack(">I", schema_id)
            with self._lock:
                self._ids[name] = prefix
                self._writers[schema_id] = (name, schema.reader)
        return prefix

    def _writer(self, schema_id: int) -> tuple[str, Any]:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        try:
            text = self._registry.schema(schema_id)
        except SchemaNotFound:
            raise DecodeError(
                f"schema id {schema_id} is unknown to the registry {self._registry.shown_url}"
            ) from None
        try:
            raw = json.loads(text)
            name = str(raw.get("name", "")).rsplit(".", 1)[-1]
            parsed = parse_schema(without_logical_types(raw), named_schemas={})
        except Exception as exc:  # not JSON, not a record, not Avro
            raise DecodeError(
                f"schema id {schema_id} is not an Avro record schema: {exc!r}"
            ) from None
        if name not in self._schemas:
            raise DecodeError(
                f"schema id {schema_id} is {raw.get('name')!r}, not a tapstream record"
            )
        with self._lock:
            self._writers[schema_id] = (name, parsed)
        return name, parsed

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return (record type, record). Reads single-object bytes too (chosen by the first byte)."""
        if data[:2] == SINGLE_OBJECT_MAGIC:
            return self._single.decode(data)
        if len(data) < HEADER or data[:1] != MAGIC:
            raise DecodeError("not Confluent wire format (expected magic byte 0 and a schema id)")
        (schema_id,) = struct.unpack(">I", data[1:HEADER])
        name, parsed = self._writer(schema_id)
        reader = self._schemas[name].reader
        return name, read_body(data, HEADER, parsed, None if parsed is reader else reader)

"""Confluent wire format (magic 0, 4-byte big-endian schema id, body) with a schema registry.

Subjects follow the record-name strategy (`io.tapstream.DiskEvent`), so one subject per record type
whatever the topic. Ids are cached both ways; the registry is asked once per schema per process.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
from fastavro import parse_schema

from tapstream.core.codec.exceptions import DecodeError, RegistryUnavailable
from tapstream.core.codec.schemas import NAMESPACE, without_logical_types, current
from tapstream.core.codec.single_object import read_body, write_record

MAGIC = b"\x00"


class RegistryClient:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry {self.url} did not answer ({exc.__class__.__name__}: {exc}); "
                "check TAPSTREAM_SCHEMA_REGISTRY_URL or unset it to use single-object encoding"
            ) from None
        if resp.status_code >= 400:
            raise RegistryUnavailable(f"schema registry {self.url}{path} answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def register(self, subject: str, schema: str) -> int:
        body = {"schemaType": "AVRO", "schema": schema}
        return int(self._call("POST", f"/subjects/{subject}/versions", json=body)["id"])

    def schema(self, schema_id: int) -> str:
        return str(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])


class ConfluentCodec:
    def __init__(self, registry: RegistryClient) -> None:
        self._registry = registry
        self._schemas = current()
        self._ids: dict[str, bytes] = {}
        self._writers: dict[int, tuple[str, Any]] = {}

    def _prefix(self, name: str) -> bytes:
        prefix = self._ids.get(name)
        if prefix is None:
            schema_id = self._registry.register(f"{NAMESPACE}.{name}", self._schemas[name].canonical)
            prefix = MAGIC + struct.pack(">I", schema_id)
            self._ids[name] = prefix
            self._writers[schema_id] = (name, self._schemas[name].reader)
        return prefix

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return write_record(self._prefix(name), self._schemas[name].parsed, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < 5 or data[:1] != MAGIC:
            raise DecodeError("not Confluent wire format (expected magic byte 0 and a schema id)")
        (schema_id,) = struct.unpack(">I", data[1:5])
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                raw = json.loads(self._registry.schema(schema_id))
            except RegistryUnavailable as exc:
                raise DecodeError(f"schema id {schema_id}: {exc}") from None
            name = str(raw.get("name", "")).rsplit(".", 1)[-1]
            if name not in self._schemas:
                raise DecodeError(f"schema id {schema_id} is {raw.get('name')!r}, not a tapstream record")
            writer = (name, parse_schema(without_logical_types(raw), named_schemas={}))
            self._writers[schema_id] = writer
        name, parsed = writer
        return name, read_body(data, 5, parsed, self._schemas[name].reader)

"""Hand-written Avro binary for the two DiskEvent bodies that carry data (Write, SyncBlock).

The tapper encodes every NBD write. The generic path (a nested dict walked against the schema by
fastavro) costs a dict per event and a copy through BytesIO; `DataEncoder` writes the same bytes
directly: the parts that never change for one volume (codec prefix, volume, host, group, union
branch) encoded once, then per event the two varints and the body fields, with `data` joined in
once (a memoryview is fine). `check_layout` proves at codec start that the bytes equal the generic
path's for the current schema, and `DataEncoder.learn` takes the codec's prefix from a probe the
generic path encoded, so a schema change this module does not know fails loudly at start instead
of writing events nobody can read.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from crc32c import crc32c
from fastavro import schemaless_writer

# Union branch indexes of DiskEvent.body, in schema order (branches are only ever appended).
WRITE_BRANCH = 0
SYNC_BLOCK_BRANCH = 5

Data = bytes | bytearray | memoryview


def varint(n: int) -> bytes:
    """Avro int/long: zigzag, then little-endian base-128."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_string(s: str) -> bytes:
    raw = s.encode()
    return varint(len(raw)) + raw


class EncoderMismatch(RuntimeError):
    """The generic path's DiskEvent does not end with ours: the schema changed; fix this module."""


class DataEncoder:
    """One volume's Write and SyncBlock events (one host, one group), straight from arguments."""

    __slots__ = ("_head", "_sync_block", "_write")

    def __init__(self, prefix: bytes, volume: str, host: str, group: str) -> None:
        self._head = prefix + avro_string(volume)
        middle = avro_string(host) + avro_string(group)
        self._write = middle + varint(WRITE_BRANCH)
        self._sync_block = middle + varint(SYNC_BLOCK_BRANCH)

    @classmethod
    def learn(
        cls, encode: Callable[[str, dict[str, Any]], bytes], volume: str, host: str, group: str
    ) -> DataEncoder:
        """An encoder with the codec's own prefix (single object or Confluent wire format), learnt
        by encoding a probe Write through `encode` (the codec's generic path)."""
        probe = {"offset": 7, "length": 3, "data": b"abc", "checksum": 11}
        record = {"volume": volume, "seq": 1, "ts": 2, "host": host, "group": group}
        encoded = encode("DiskEvent", {**record, "body": ("Write", probe)})
        body = cls(b"", volume, host, group).encode(1, 2, 7, b"abc", 11)
        if not encoded.endswith(body):
            raise EncoderMismatch("the codec's DiskEvent layout is not the one fast_write writes")
        return cls(encoded[: len(encoded) - len(body)], volume, host, group)

    def encode(
        self,
        seq: int,
        ts: int,
        offset: int,
        data: Data,
        checksum: int | None = None,
        sync_id: str | None = None,
    ) -> bytes:
        """A Write event (a SyncBlock with `sync_id`) carrying `data` at `offset`; `checksum`
        defaults to CRC-32C of `data`; `length` is always `len(data)`."""
        n = len(data)
        if checksum is None:
            checksum = crc32c(data)
        if sync_id is None:
            middle = self._write
        else:
            middle = self._sync_block + avro_string(sync_id)
        return b"".join(
            (
                self._head,
                varint(seq),
                varint(ts),
                middle,
                varint(offset),
                varint(n),
                varint(n),
                data,
                varint(checksum),
            )
        )


def check_layout(parsed_disk_event: Any) -> None:
    """Raise AssertionError unless DataEncoder writes what fastavro writes for this schema."""
    data = bytes(range(200))
    for sync_id in (None, "s-1"):
        branch, extra = (
            ("io.tapstream.Write", {})
            if sync_id is None
            else ("io.tapstream.SyncBlock", {"sync_id": sync_id})
        )
        record = {
            "volume": "vol-é",
            "seq": 123_456_789,
            "ts": 1_700_000_000_000_000,
            "host": "h",
            "group": "g",
            "body": (
                branch,
                {
                    **extra,
                    "offset": 1 << 40,
                    "length": len(data),
                    "data": data,
                    "checksum": 0xFFFFFFFF,
                },
            ),
        }
        buf = io.BytesIO()
        schemaless_writer(buf, parsed_disk_event, record)
        mine = DataEncoder(b"", "vol-é", "h", "g").encode(
            123_456_789, 1_700_000_000_000_000, 1 << 40, data, 0xFFFFFFFF, sync_id
        )
        if buf.getvalue() != mine:
            raise AssertionError(
                f"{branch}: fast_write no longer matches schemas/DiskEvent.avsc; update it"
            )

"""Hand-written Avro binary for the two DiskEvent bodies that carry data (Write, SyncBlock).

The tapper encodes every NBD write. The generic path (a nested dict walked against the schema by
fastavro) costs a dict per event and a copy through BytesIO; this writes the same bytes directly
from the arguments: header fields, union branch index, body fields, with `data` joined in once
(a memoryview is fine). `check_layout` proves at codec start that the bytes equal the generic
path's for the current schema, so a schema change this module does not know fails loudly at
start instead of writing events nobody can read.
"""

from __future__ import annotations

import io
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


def write_event(
    prefix: bytes,
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
    """prefix + a DiskEvent whose body is Write (or SyncBlock when `sync_id` is given).

    `checksum` defaults to CRC-32C of `data`; `length` is always `len(data)`.
    """
    n = len(data)
    if checksum is None:
        checksum = crc32c(data)
    if sync_id is None:
        branch = b"\x00"  # varint(WRITE_BRANCH)
    else:
        branch = b"\x0a" + avro_string(sync_id)  # varint(SYNC_BLOCK_BRANCH), then sync_id
    return b"".join(
        (
            prefix,
            avro_string(volume),
            varint(seq),
            varint(ts),
            avro_string(host),
            avro_string(group),
            branch,
            varint(offset),
            varint(n),
            varint(n),
            data,
            varint(checksum),
        )
    )


def check_layout(parsed_disk_event: Any) -> None:
    """Raise AssertionError unless write_event() writes what fastavro writes for this schema."""
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
        mine = write_event(
            b"",
            "vol-é",
            123_456_789,
            1_700_000_000_000_000,
            "h",
            "g",
            1 << 40,
            data,
            0xFFFFFFFF,
            sync_id,
        )
        if buf.getvalue() != mine:
            raise AssertionError(
                f"{branch}: fast_write no longer matches schemas/DiskEvent.avsc; update it"
            )

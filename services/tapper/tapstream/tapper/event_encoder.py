"""DiskEvent encoding for the hot path (pure; no I/O).

The generic codec walks a dict against the schema for every record, which costs more than the rest
of a 4 KiB write. The fields of one volume's events never change except seq, ts and the body, so the
encoder writes the Avro binary directly: a constant head (codec prefix + volume), the two varints,
a constant middle (host, group, union branch), then the body fields. The codec's own prefix (single
object or Confluent wire format) is learnt by encoding a probe record through the codec, and the
result is checked by decoding through the codec, so a schema change that this encoder does not know
makes it refuse at start instead of writing bytes nobody can read.
"""

from __future__ import annotations

from typing import Any

from tapstream.core.codec import Codec

# Union branch indexes of DiskEvent.body, in schema order.
BRANCH_INDEX = {
    "Write": 0,
    "Zero": 1,
    "Flush": 2,
    "Checkpoint": 3,
    "SyncStart": 4,
    "SyncBlock": 5,
    "SyncEnd": 6,
}


class EncoderMismatch(RuntimeError):
    """The codec's output differs from ours: the schema changed; use the codec instead."""


def varint(n: int) -> bytes:
    """Avro long/int: zigzag, then little-endian base-128."""
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


class WriteEncoder:
    """Encodes one volume's Write and SyncBlock events; other bodies go through the codec."""

    def __init__(self, codec: Codec, volume: str, host: str, group: str) -> None:
        self.codec = codec
        self.volume, self.host, self.group = volume, host, group
        probe = {"offset": 7, "length": 3, "data": b"abc", "checksum": 11}
        encoded = codec.encode("DiskEvent", self._record(1, 2, "Write", probe))
        body = self._body(1, 2, "Write", probe, b"")
        if not encoded.endswith(body):
            raise EncoderMismatch("the codec's DiskEvent layout is not the one this encoder writes")
        self._prefix = encoded[: len(encoded) - len(body)]
        self._head = self._prefix + avro_string(volume)
        self._middle = {
            b: avro_string(host) + avro_string(group) + varint(i) for b, i in BRANCH_INDEX.items()
        }
        for branch, extra in (("Write", {}), ("SyncBlock", {"sync_id": "probe"})):
            data = bytes(range(200))
            fields = {
                "offset": 1 << 40,
                "length": len(data),
                "data": data,
                "checksum": 0xFFFFFFFF,
                **extra,
            }
            mine = self.encode_data(
                123456789,
                1_700_000_000_000_000,
                branch,
                1 << 40,
                data,
                0xFFFFFFFF,
                extra.get("sync_id"),
            )
            name, back = codec.decode(mine)
            if name != "DiskEvent" or back["seq"] != 123456789 or back["body"] != (branch, fields):
                raise EncoderMismatch(
                    f"the codec reads {branch} differently from what this encoder writes"
                )

    def _record(self, seq: int, ts: int, branch: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "seq": seq,
            "ts": ts,
            "host": self.host,
            "group": self.group,
            "body": (branch, body),
        }

    def _body(self, seq: int, ts: int, branch: str, body: dict[str, Any], prefix: bytes) -> bytes:
        return b"".join(
            [
                prefix,
                avro_string(self.volume),
                varint(seq),
                varint(ts),
                avro_string(self.host),
                avro_string(self.group),
                varint(BRANCH_INDEX[branch]),
                varint(body["offset"]),
                varint(body["length"]),
                varint(len(body["data"])),
                body["data"],
                varint(body["checksum"]),
            ]
        )

    def encode_data(
        self,
        seq: int,
        ts: int,
        branch: str,
        offset: int,
        data: bytes | memoryview,
        checksum: int,
        sync_id: str | None = None,
    ) -> bytes:
        """A Write (or, with `sync_id`, a SyncBlock) event carrying `data` at `offset`."""
        n = len(data)
        parts: list[bytes | memoryview] = [
            self._head,
            varint(seq),
            varint(ts),
            self._middle[branch],
        ]
        if sync_id is not None:
            parts.append(avro_string(sync_id))
        parts += [varint(offset), varint(n), varint(n), data, varint(checksum)]
        return b"".join(parts)

    def encode(self, seq: int, ts: int, branch: str, body: dict[str, Any]) -> bytes:
        """Any other event, through the codec."""
        return self.codec.encode("DiskEvent", self._record(seq, ts, branch, body))

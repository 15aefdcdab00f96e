"""Replaying a volume's write stream: apply DiskEvents in seq order to an image file.

The apply step is plain file I/O (no Kafka) so the VDSA, reverse protection, restore and tests share
it, each with a `contract.Cursor` deciding what may be applied; `read_stream` reads a topic from the
beginning to its current end with a plain Kafka consumer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import TopicPartition

from tapstream.core.codec import Codec
from tapstream.core.contract import Cursor, Halt, StreamError, verify_body
from tapstream.core.kafka import sync_consumer

__all__ = ["Halt", "StreamError", "VolumeReplay", "apply_body", "read_stream", "replay_volume"]


@dataclass
class VolumeReplay:
    """Applies one volume's events to an open image fd under the stream contract: a gap, a bad
    checksum or a broken sync bracket raises `Halt` (a StreamError) and applies nothing more."""

    fd: int
    volume: str
    events: int = 0
    checkpoints: list[str] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)

    def __post_init__(self) -> None:
        self.cursor.volume = self.volume

    @property
    def last_seq(self) -> int:
        return self.cursor.seq

    def apply(self, record: dict[str, Any]) -> None:
        verdict = self.cursor.check(record)
        if verdict == "duplicate":
            return  # already applied: idempotent
        if verdict == "halted":
            raise Halt(**{k: self.cursor.halt[k] for k in ("reason", "detail", "seq")})  # type: ignore[index]
        apply_body(self.fd, record["body"], verify=False)
        self.cursor.advance(record)
        self.events += 1
        if record["body"][0] == "Checkpoint":
            self.checkpoints.append(record["body"][1]["id"])


def apply_body(fd: int, body: tuple[str, dict[str, Any]], verify: bool = True) -> None:
    """Write one event's bytes to `fd` (after checking its CRC-32C unless the caller's cursor did)."""
    branch, b = body
    if verify:
        verify_body(branch, b)
    if branch in ("Write", "SyncBlock"):
        data = b["data"]
        if os.pwrite(fd, data, b["offset"]) != len(data):
            raise OSError(5, "short write while replaying")
    elif branch == "Zero":
        _zero(fd, b["offset"], b["length"])
    elif branch == "SyncStart":
        size = os.fstat(fd).st_size
        if size < b["volume_size"]:
            os.ftruncate(fd, b["volume_size"])
    # Flush, Checkpoint and SyncEnd change no bytes.


def _zero(fd: int, offset: int, length: int) -> None:
    chunk = bytes(min(length, 1 << 20))
    end = offset + length
    while offset < end:
        n = min(len(chunk), end - offset)
        os.pwrite(fd, chunk[:n], offset)
        offset += n


def read_stream(
    conf: dict[str, Any], topic: str, codec: Codec
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Every record of `topic` from the beginning to the end offsets seen at the start:
    yields (partition, offset, record)."""
    consumer = sync_consumer(
        conf, group_id="tapstream-replay", options={"enable.partition.eof": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        assign = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        consumer.assign(assign)
        while ends:
            msg = consumer.poll(10)
            if msg is None:
                raise TimeoutError(f"no record from {topic} in 10 s while replaying")
            if msg.error():
                raise RuntimeError(str(msg.error()))
            # A record without error has an offset; our topics carry no tombstones (value None).
            p, off = msg.partition(), cast(int, msg.offset())
            if p in ends:
                yield p, off, codec.decode(cast(bytes, msg.value()))[1]
                if off + 1 >= ends[p]:
                    del ends[p]
    finally:
        consumer.close()


def replay_volume(
    conf: dict[str, Any], topic: str, volume: str, image: str, size: int, codec: Codec
) -> VolumeReplay:
    """Replay every event of `volume` in `topic` onto a blank image of `size` bytes."""
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        replay = VolumeReplay(fd, volume)
        for _p, _off, record in read_stream(conf, topic, codec):
            if record["volume"] == volume:
                replay.apply(record)
        return replay
    finally:
        os.close(fd)

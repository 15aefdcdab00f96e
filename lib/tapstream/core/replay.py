"""Replaying a volume's write stream: apply DiskEvents in seq order to an image file.

The apply step is pure file I/O (no Kafka) so the VDSA, restore and tests share it; `read_stream`
reads a topic from the beginning to its current end with a plain Kafka consumer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import crc32c
from confluent_kafka import Consumer, TopicPartition

from tapstream.core.codec import Codec


class StreamError(RuntimeError):
    """The stream is broken: a seq gap or a checksum mismatch (data loss or corruption)."""


@dataclass
class VolumeReplay:
    """Applies one volume's events to an open image fd, checking seq continuity and checksums."""

    fd: int
    volume: str
    last_seq: int = 0
    events: int = 0
    checkpoints: list[str] = field(default_factory=list)

    def apply(self, record: dict[str, Any]) -> None:
        seq = record["seq"]
        if seq <= self.last_seq:
            return  # already applied: idempotent
        if seq != self.last_seq + 1:
            raise StreamError(f"{self.volume}: seq gap, expected {self.last_seq + 1}, got {seq}")
        apply_body(self.fd, record["body"])
        self.last_seq = seq
        self.events += 1
        if record["body"][0] == "Checkpoint":
            self.checkpoints.append(record["body"][1]["id"])


def apply_body(fd: int, body: tuple[str, dict[str, Any]]) -> None:
    branch, b = body
    if branch in ("Write", "SyncBlock"):
        data = b["data"]
        if crc32c.crc32c(data) != b["checksum"] or len(data) != b["length"]:
            raise StreamError(f"checksum mismatch at offset {b['offset']}")
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
    consumer = Consumer(
        {
            **conf,
            "group.id": "tapstream-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
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

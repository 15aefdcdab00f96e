"""Turning requests into DiskEvents on Kafka: per-volume gap-free seq, chunking, checksums."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import crc32c
from confluent_kafka import Consumer, TopicPartition

from tapstream.core.codec import Codec, DecodeError
from tapstream.core.kafka import AsyncProducer


def now_us() -> int:
    return time.time_ns() // 1000


class VolumeStream:
    """The event stream of one volume. `publish` allocates the next seq synchronously, so events
    enter the producer (and the partition) in the order the tapper applied them locally."""

    def __init__(self, volume: str, group: str, topic: str, host: str, producer: AsyncProducer,
                 codec: Codec, last_seq: int, chunk_bytes: int) -> None:
        self.volume = volume
        self.group = group
        self.topic = topic
        self.host = host
        self.key = volume.encode()
        self.seq = last_seq
        self._producer = producer
        self._codec = codec
        self.chunk_bytes = chunk_bytes

    def publish(self, branch: str, body: dict[str, Any]) -> asyncio.Future[Any]:
        self.seq += 1
        value = self._codec.encode("DiskEvent", {
            "volume": self.volume, "seq": self.seq, "ts": now_us(), "host": self.host,
            "group": self.group, "body": (branch, body)})
        return self._producer.produce_nowait(self.topic, value, key=self.key)

    def publish_write(self, offset: int, data: bytes | memoryview, branch: str = "Write",
                      extra: dict[str, Any] | None = None) -> list[asyncio.Future[Any]]:
        """One Write (or SyncBlock) per chunk of `data`."""
        futures = []
        view = memoryview(data)
        for start in range(0, len(view), self.chunk_bytes):
            chunk = bytes(view[start : start + self.chunk_bytes])
            body = {"offset": offset + start, "length": len(chunk), "data": chunk,
                    "checksum": crc32c.crc32c(chunk)}
            if extra:
                body.update(extra)
            futures.append(self.publish(branch, body))
        return futures


def last_seq(conf: dict[str, Any], topic: str, volume: str, codec: Codec, window: int = 64) -> int:
    """The highest seq of `volume` already in `topic` (0 if none): a restarted tapper continues there.

    Reads each partition backwards in windows from its end until it finds one of the volume's events.
    """
    key = volume.encode()
    consumer = Consumer({**conf, "group.id": f"tapstream-tapper-seq-{volume}", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    best = 0
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            end = high
            while end > low:
                start = max(low, end - window)
                consumer.assign([TopicPartition(topic, p, start)])
                found = 0
                pos = start
                while pos < end:
                    msg = consumer.poll(5)
                    if msg is None:
                        raise TimeoutError(f"reading {topic}[{p}] at {pos} timed out")
                    if msg.error():
                        if msg.error().code() == -191:  # partition EOF
                            break
                        raise RuntimeError(str(msg.error()))
                    pos = msg.offset() + 1
                    if msg.key() == key and pos <= end:
                        try:
                            _, rec = codec.decode(msg.value())
                        except DecodeError:
                            continue
                        found = max(found, rec["seq"])
                if found:
                    best = max(best, found)
                    break
                end = start
    finally:
        consumer.close()
    return best

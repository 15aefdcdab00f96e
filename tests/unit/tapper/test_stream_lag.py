"""The stream's lag (the tapper's RPO gauge): an upper bound of the oldest unacked event's age,
kept without a per-event structure, and 0 once everything is acked."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tapstream.core.codec import SingleObjectCodec
from tapstream.tapper.publish import VolumeStream


class HeldProducer:
    """Keeps the delivery callbacks; the test acks them in order, as librdkafka delivers a
    partition's records."""

    def __init__(self) -> None:
        self.pending: list[Callable[[Any], None]] = []

    def produce_then(
        self, topic: str, value: bytes, key: bytes, then: Callable[[Any], None]
    ) -> None:
        self.pending.append(then)

    def ack(self, i: int) -> None:
        self.pending[i](None)


def stream(producer: HeldProducer) -> VolumeStream:
    return VolumeStream(
        "vol",
        "g",
        "tapstream.writes.g",
        "host",
        producer,  # type: ignore[arg-type]
        SingleObjectCodec(),
        0,
        1 << 20,
        "async",
        lambda exc: None,
    )


async def test_lag_bounds_the_oldest_unacked_event_and_resets_when_all_are_acked() -> None:
    producer = HeldProducer()
    s = stream(producer)
    assert s.lag_s(time.perf_counter()) == 0.0
    before = time.perf_counter()
    s.publish_data(0, b"a" * 4096)
    s.publish_data(4096, b"b" * 4096)
    after_send = time.perf_counter()
    later = after_send + 5.0
    lag = s.lag_s(later)
    assert later - after_send <= lag <= later - before  # measured from the first send
    producer.ack(0)
    assert s.outstanding == 1
    assert 0 < s.lag_s(later) <= lag  # still bounded, never grows by an ack
    producer.ack(1)
    assert s.lag_s(later) == 0.0


async def test_an_idle_stream_starts_its_lag_at_the_next_send_not_at_the_last_ack() -> None:
    producer = HeldProducer()
    s = stream(producer)
    s.publish_data(0, b"a" * 512)
    producer.ack(0)
    s._oldest_sent -= 100.0  # as if the last ack were 100 s old: a long quiet spell
    s.publish_data(512, b"b" * 512)
    assert s.lag_s(time.perf_counter()) < 1.0

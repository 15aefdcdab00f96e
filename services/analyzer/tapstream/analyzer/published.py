"""Reading what the analyzers published (alerts and other records on the protected cluster) and how
far an analyzer's consumer group has come: for `tapstream analyze`, the evaluation and the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from confluent_kafka import TopicPartition

from tapstream.core.codec import DecodeError, make_codec
from tapstream.core.kafka import sync_consumer
from tapstream.core.settings import TapstreamSettings


def read_topic(
    settings: TapstreamSettings, topic: str, name: str, match: Callable[[dict], bool]
) -> list[dict]:
    """Every record of `topic` (record type `name`) for which `match` holds, oldest first."""
    codec = make_codec(settings)
    c = sync_consumer(
        settings,
        group_id="tapstream-eval-reader",
        bootstrap=settings.protected_bootstrap,
        options={"enable.partition.eof": True},
    )
    out: list[dict] = []
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return out
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, low)])
            while True:
                msg = c.poll(10)
                if msg is None or ((err := msg.error()) and err.code() == -191):  # _PARTITION_EOF
                    break
                if msg.error():
                    continue
                try:
                    got, rec = codec.decode(cast(bytes, msg.value()))  # no tombstones in our topics
                except DecodeError:
                    continue
                if got == name and match(rec):
                    out.append(rec)
    finally:
        c.close()
    return out


def alerts_of(settings: TapstreamSettings, group: str) -> list[dict]:
    return read_topic(settings, settings.topic("alerts"), "Alert", lambda r: r["group"] == group)


def committed_lag(settings: TapstreamSettings, consumer_group: str, topic: str) -> int | None:
    """Records of `topic` not yet committed by `consumer_group` (None: nothing committed yet)."""
    c = sync_consumer(settings, group_id=consumer_group, bootstrap=settings.protected_bootstrap)
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        lag, committed = 0, False
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            committed = committed or tp.offset >= 0
            lag += high - max(
                tp.offset, low
            )  # a partition never committed (maybe empty) counts whole
        return lag if committed else None
    finally:
        c.close()

"""Replication lag and RPO of a group's write topic across MirrorMaker 2.

RPO here is the age of the oldest write on the protected cluster that is not yet on the recovery
cluster (0 when everything is mirrored): the data a disaster right now would lose. MirrorMaker 2
keeps offsets aligned for our topics (no compaction, no transactions), so "not yet mirrored" is
"at or past the mirrored topic's end offset".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from tapstream.core.kafka import sync_consumer


@dataclass(frozen=True)
class Lag:
    records: int
    rpo_s: float
    newest_offset: int


def rpo_seconds(now_s: float, oldest_unmirrored_ts_ms: int | None) -> float:
    """Pure: the RPO given the timestamp of the oldest unmirrored record (None: nothing pending)."""
    if oldest_unmirrored_ts_ms is None:
        return 0.0
    return max(0.0, now_s - oldest_unmirrored_ts_ms / 1000)


class LagProbe:
    def __init__(self, protected_conf: dict[str, Any], recovery_conf: dict[str, Any]) -> None:
        self.p = sync_consumer(protected_conf, group_id="tapstream-replicator-probe")
        self.r = sync_consumer(recovery_conf, group_id="tapstream-replicator-probe")

    def close(self) -> None:
        self.p.close()
        self.r.close()

    def measure(self, topic: str, mirrored: str) -> Lag | None:
        meta = self.p.list_topics(topic, timeout=5).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        records, oldest, newest = 0, None, 0
        for part in meta.partitions:
            _, high_p = self.p.get_watermark_offsets(TopicPartition(topic, part), timeout=5)
            try:
                _, high_r = self.r.get_watermark_offsets(TopicPartition(mirrored, part), timeout=5)
            except Exception:
                high_r = 0  # not mirrored yet at all
            newest = max(newest, high_p)
            if high_p > high_r:
                records += high_p - high_r
                self.p.assign([TopicPartition(topic, part, high_r)])
                msg = self.p.poll(5)
                if msg is not None and not msg.error():
                    ts = msg.timestamp()[1]
                    oldest = ts if oldest is None else min(oldest, ts)
        return Lag(records, rpo_seconds(time.time(), oldest), newest)

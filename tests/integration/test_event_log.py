"""The site manager's event store reads the other site's mirrored copy of tapstream.events even when
that topic appears only after the reader started (the first group ever created at the other site)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from tapstream.core.kafka import TopicSpec, client_config, ensure_topics
from tapstream.site_manager.domain import Recorded
from tapstream.site_manager.domain import events as e
from tapstream.site_manager.event_log import EventLog, Read

pytestmark = pytest.mark.integration


async def test_a_mirrored_topic_that_appears_later_is_read(stack, unique_name: str) -> None:
    settings = stack.settings.model_copy(
        update={"topic_prefix": f"tapstream.{unique_name}", "site": "recovery"}
    )
    log = EventLog(settings)
    reads: list[Read] = []
    remote_read = asyncio.Event()

    async def handler(batch: list[Read]) -> None:
        reads.extend(batch)
        if any(r.topic == log.remote for r in batch):
            remote_read.set()

    await log.start()
    log.follow({}, handler)
    try:
        await log.wait_caught_up(
            within_s=60
        )  # its own (empty) topic; the remote one does not exist
        # What MirrorMaker 2 does when the protected site writes its first event: create the copy.
        conf = client_config(settings, settings.recovery_bootstrap)
        await ensure_topics(conf, [TopicSpec(log.remote, partitions=1)])
        rec = Recorded("ev-1", "group", "g1", 1, 1, "protected", e.GroupCreated("g1"))
        p = Producer(conf)
        p.produce(log.remote, log.codec.encode("DomainEvent", rec.to_record()), key=b"g1")
        assert p.flush(30) == 0
        await asyncio.wait_for(remote_read.wait(), 30)
        got = next(r for r in reads if r.topic == log.remote)
        assert got.record is not None and got.record.id == "ev-1" and got.offset == 0
    finally:
        await log.stop()

"""The replicator: measures lag and RPO of every group across MirrorMaker 2 (metrics + Progress on
the recovery cluster) and, for the local stack, keeps its dedicated MirrorMaker 2 running."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    producer_config,
)
from tapstream.core.logging import get_logger
from tapstream.core.records import ProgressSource
from tapstream.replicator import metrics
from tapstream.replicator.lag import LagProbe
from tapstream.replicator.settings import ReplicatorSettings

log = get_logger("tapstream.replicator")


class Replicator:
    def __init__(self, settings: ReplicatorSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self._task: asyncio.Task[None] | None = None
        self._producer: AsyncProducer | None = None
        self._probe: LagProbe | None = None
        self._backoff = settings.replicator_restart_backoff_s
        self._next_restart = 0.0

    async def start(self) -> None:
        if not self.s.replicator_groups:
            raise ValueError('no protection groups: set TAPSTREAM_REPLICATOR_GROUPS, e.g. ["g1"]')
        recovery = client_config(self.s, self.s.recovery_bootstrap)
        await ensure_topics(recovery, [TopicSpec(self.s.topic("progress"))])
        self._producer = AsyncProducer(
            producer_config(self.s, self.s.recovery_bootstrap, linger_ms=5)
        )
        await self._producer.start()
        self._probe = LagProbe(client_config(self.s, self.s.protected_bootstrap), recovery)
        self._task = asyncio.create_task(self._loop())

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._probe:
            self._probe.close()
        if self._producer:
            await self._producer.stop()

    async def _loop(self) -> None:
        while True:
            if self.s.replicator_supervise_local:
                await asyncio.to_thread(self._supervise)
            for group in self.s.replicator_groups:
                await self._measure(group)
            await asyncio.sleep(self.s.replicator_interval_s)

    async def _measure(self, group: str) -> None:
        assert self._probe is not None and self._producer is not None
        topic = self.s.topic(f"writes.{group}")
        lag = await asyncio.to_thread(self._probe.measure, topic, self.s.mirrored(topic))
        if lag is None:
            return
        metrics.LAG.labels(group).set(lag.records)
        metrics.RPO.labels(group).set(lag.rpo_s)
        now = now_us()
        value = self.codec.encode(
            "Progress",
            {
                "group": group,
                "volume": "*",
                "site": "recovery",
                "source": ProgressSource.REPLICATOR,
                "applied_seq": 0,
                "applied_ts": now,
                "applied_offset": lag.newest_offset - lag.records,
                "newest_seq_seen": 0,
                "rpo_seconds": lag.rpo_s,
                "lag_records": lag.records,
                "ts": now,
            },
        )
        self._producer.produce_nowait(self.s.topic("progress"), value, key=group.encode())

    def _supervise(self) -> None:
        """Restart the local stack's MirrorMaker 2 if it died, backing off while it keeps dying."""
        from tapstream.core.settings import load
        from tapstream.localstack import LocalStackSettings, Stack

        stack = Stack(load(LocalStackSettings))
        mm2 = next(c for c in stack.status() if c.name == "mirrormaker")
        if mm2.up:
            self._backoff = self.s.replicator_restart_backoff_s
            return
        if time.monotonic() < self._next_restart:
            return
        log.warning("MirrorMaker 2 is down; restarting it", backoff_s=self._backoff)
        metrics.MM2_RESTARTS.inc()
        try:
            stack.up()
        except Exception as exc:
            log.error(
                "restarting MirrorMaker 2 failed",
                error=str(exc),
                hint="see .tapstream/logs/mirrormaker.log",
            )
        self._next_restart = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 120.0)

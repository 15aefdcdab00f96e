"""The VDSA of a site. Protected: takes a checkpoint of each group every interval. Recovery:
applies the mirrored stream to the replica volumes."""

from __future__ import annotations

import asyncio
import contextlib

from tapstream.core.kafka import TopicSpec, client_config, ensure_topics
from tapstream.core.logging import get_logger
from tapstream.vdsa import metrics
from tapstream.vdsa.apply import Applier
from tapstream.vdsa.coordinator import CheckpointFailed, Coordinator
from tapstream.vdsa.settings import VdsaSettings

log = get_logger("tapstream.vdsa")


class Vdsa:
    def __init__(self, settings: VdsaSettings) -> None:
        self.s = settings
        self.coordinator: Coordinator | None = None
        self.applier: Applier | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self.s.vdsa_groups:
            raise ValueError('no protection groups: set TAPSTREAM_VDSA_GROUPS, e.g. ["g1"]')
        if self.s.site == "protected":
            self.coordinator = Coordinator(
                self.s,
                self.s.vdsa_prepare_timeout_s,
                self.s.vdsa_announce_window_s,
                groups=self.s.vdsa_groups,
            )
            await self.coordinator.start()
            if self.s.vdsa_checkpoint_interval_s > 0:
                self._tasks = [asyncio.create_task(self._every(g)) for g in self.s.vdsa_groups]
        else:
            await ensure_topics(
                client_config(self.s),
                [TopicSpec(self.s.topic("progress")), TopicSpec(self.s.topic("alerts"))],
            )
            self.applier = Applier(self.s)
            await self.applier.start()

    async def _every(self, group: str) -> None:
        while True:
            await asyncio.sleep(self.s.vdsa_checkpoint_interval_s)
            assert self.coordinator is not None
            try:
                await self.coordinator.checkpoint(group)
                metrics.CHECKPOINTS.labels(group, "ok").inc()
            except CheckpointFailed as exc:
                metrics.CHECKPOINTS.labels(group, "failed").inc()
                log.warning("automatic checkpoint failed", group=group, reason=str(exc))

    async def wait(self) -> None:
        if self.applier is not None:
            await self.applier.wait()
        else:
            await asyncio.Event().wait()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.coordinator:
            await self.coordinator.stop()
        if self.applier:
            await self.applier.stop()

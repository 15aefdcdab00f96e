"""What the console shows beside the site manager's own state: the Progress the replicator and the
applying VDSAs report on `tapstream.progress` (recovery cluster, from an hour back) and the alerts on
`tapstream.alerts` (the analyzers' on the protected cluster, the VDSAs' halts on the recovery one).
Followers read them and keep, in memory, the newest report of each reporter, an hour of RPO per group (the chart) and the alerts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from tapstream.core.codec import DecodeError, make_codec
from tapstream.core.kafka import make_consumer, partitions_now
from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings
from tapstream.site_manager.console.infra import InfraProbe
from tapstream.site_manager.console.views import REPLICATOR

log = get_logger("tapstream.site_manager.console")

BUCKET_S = 10.0  # one chart point per group every 10 s (the worst report in it): 360 an hour


@dataclass
class RpoHistory:
    """Per group: the newest Progress of each reporter and the last hour's RPO in buckets."""

    window_s: float = 3600.0
    latest: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    buckets: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def add(self, rec: dict[str, Any]) -> None:
        group = rec["group"]
        key = (rec["source"], rec["volume"])
        mine = self.latest.setdefault(group, {})
        if key in mine and mine[key]["ts"] > rec["ts"]:
            return  # an older report read after a newer one (two partitions)
        mine[key] = rec
        if rec["source"] != REPLICATOR:
            return  # the chart is the RPO (views.live_rpo says why only the replicator's)
        t = rec["ts"] / 1e6
        start = t - t % BUCKET_S
        line = self.buckets.setdefault(group, deque())
        if line and line[-1][0] == start:
            line[-1] = (start, max(line[-1][1], float(rec["rpo_seconds"])))
        elif not line or start > line[-1][0]:
            line.append((start, float(rec["rpo_seconds"])))
        while line and line[0][0] < t - self.window_s:
            line.popleft()

    def reports(self, group: str) -> list[dict[str, Any]]:
        return list(self.latest.get(group, {}).values())

    def samples(self, group: str) -> list[tuple[float, float]]:
        return list(self.buckets.get(group, ()))


@dataclass
class Follow:
    """How one follower is doing: shown on the overview as the cluster's health."""

    cluster: str
    topic: str
    history_s: float | None  # read from this far back (None: from the beginning)
    connected: bool = False
    error: str = ""
    last_read_s: float = 0.0


class Telemetry:
    def __init__(self, settings: TapstreamSettings, keep_alerts: int = 500) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.rpo = RpoHistory()
        self.alerts: deque[dict[str, Any]] = deque(maxlen=keep_alerts)
        self.follows = [
            Follow("recovery", settings.topic("progress"), self.rpo.window_s),
            Follow("protected", settings.topic("alerts"), None),  # the analyzers'
            Follow("recovery", settings.topic("alerts"), None),  # the VDSAs': a replica halted
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.infra = InfraProbe(settings)

    def start(self) -> None:
        progress, *alerts = self.follows
        bootstrap = {"protected": self.s.protected_bootstrap, "recovery": self.s.recovery_bootstrap}
        self._tasks = [
            asyncio.create_task(
                self._follow(progress, bootstrap["recovery"], "Progress", self.rpo.add)
            ),
            *(
                asyncio.create_task(
                    self._follow(f, bootstrap[f.cluster], "Alert", self.alerts.append)
                )
                for f in alerts
            ),
            asyncio.create_task(self.infra.run()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _follow(
        self, f: Follow, bootstrap: str, name: str, take: Callable[[dict[str, Any]], None]
    ) -> None:
        """Read `f.topic` for ever; reconnect after an error."""
        while True:
            try:
                await self._read(f, bootstrap, name, take)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is down: say so on the page, try again
                f.connected, f.error = False, str(exc) or repr(exc)
                log.warning("console cannot read", topic=f.topic, error=f.error)
                await asyncio.sleep(5)

    async def _read(
        self, f: Follow, bootstrap: str, name: str, take: Callable[[dict[str, Any]], None]
    ) -> None:
        consumer = make_consumer(
            self.s, group_id=None, bootstrap=bootstrap, isolation_level="read_uncommitted"
        )
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            while not tps:  # the topic appears with its first writer
                tps = await partitions_now(consumer, f.topic)
                f.connected, f.error = True, "" if tps else f"{f.topic} does not exist yet"
                if not tps:
                    await asyncio.sleep(2)
            consumer.assign(tps)
            if f.history_s is None:
                await consumer.seek_to_beginning(*tps)
            else:
                since = int((time.time() - f.history_s) * 1000)
                found = await consumer.offsets_for_times({tp: since for tp in tps})
                for tp in tps:
                    at = found.get(tp)
                    if at is None:  # nothing that recent: only what comes
                        await consumer.seek_to_end(tp)
                    else:
                        consumer.seek(tp, at.offset)
            f.error = ""
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
                for msgs in batch.values():
                    for msg in msgs:
                        if msg.value is None:
                            continue
                        try:
                            got, rec = self.codec.decode(msg.value)
                        except DecodeError:
                            continue
                        if got == name:
                            take(rec)
                f.last_read_s = time.time()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

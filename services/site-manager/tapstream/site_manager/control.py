"""Commands to a group's tappers and VDSAs (tapstream.control of a site), and the checkpoints this
site manager takes and records in its own checkpoint log of the group."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    producer_config,
)
from tapstream.core.logging import get_logger
from tapstream.site_manager.application import Execute
from tapstream.site_manager.domain import DomainError
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.layout import Layout

log = get_logger("tapstream.site_manager.control")


class Control:
    def __init__(self, layout: Layout, execute: Execute) -> None:
        self.layout = layout
        self.site = layout.site
        self.execute = execute
        self._producers: dict[str, AsyncProducer] = {}

    async def stop(self) -> None:
        for p in self._producers.values():
            await p.stop()

    async def control(
        self, group: str, kind: str, args: dict[str, str] | None = None, site: str | None = None
    ) -> None:
        """One Command to the tappers and VDSAs of `group` on tapstream.control of `site`."""
        g = self.layout.group(group)
        site = site or g.active_site
        settings = self.layout.settings_for(site)
        p = self._producers.get(site)
        if p is None:
            await ensure_topics(
                client_config(settings), [TopicSpec(settings.topic("control"), partitions=1)]
            )
            p = self._producers[site] = AsyncProducer(producer_config(settings, linger_ms=0))
            await p.start()
        command = {
            "id": str(uuid.uuid4()),
            "group": group,
            "kind": kind,
            "sender": f"site-manager@{self.site}",
            "ts": time.time_ns() // 1000,
            "checkpoint_id": None,
            "tag": None,
            "volumes": [],
            "args": args or {},
        }
        value = make_codec(settings).encode(
            "Command", sign(command, Keyring.from_settings(settings))
        )
        await p.produce(settings.topic("control"), value, key=group.encode())
        opts = args or {}
        if (kind == "PAUSE" and opts.get("writes") == "refuse") or kind == "RESUME":
            # The fence lives in the tappers; the group's trail says who set or lifted it, and when.
            try:
                await self.execute(
                    "group", group, c.RecordFence(site, opts.get("owner", ""), kind == "PAUSE")
                )
            except DomainError as exc:
                log.warning("fence not recorded in the group", group=group, error=str(exc))

    async def checkpoint(self, group: str, tag: str | None, site: str | None = None) -> str:
        from tapstream.vdsa.coordinator import CheckpointFailed, create_checkpoint

        g = self.layout.group(group)
        site = site or g.active_site
        try:
            cp = await create_checkpoint(self.layout.settings_for(site), group, tag)
        except CheckpointFailed as exc:
            raise DomainError(f"checkpoint of {group!r} failed: {exc}") from None
        await self.record_checkpoint(group, cp, tag or "", site)
        return cp

    async def final_checkpoint(self, group: str, tag: str, site: str, within_s: float = 60) -> str:
        """A checkpoint of a group whose writes just stopped: retried until its tappers agree."""
        from tapstream.vdsa.coordinator import CheckpointFailed, create_checkpoint

        deadline = time.monotonic() + within_s
        while True:
            try:
                cp = await create_checkpoint(self.layout.settings_for(site), group, tag)
                await self.record_checkpoint(group, cp, tag, site)
                return cp
            except CheckpointFailed as exc:
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"no final checkpoint at the {site} site: {exc}"
                    ) from None
                await asyncio.sleep(0.5)

    async def record_checkpoint(self, group: str, cp: str, tag: str, site: str) -> None:
        """In this site manager's own checkpoint log of the group: one writer, never a conflict."""
        log_id = a.CheckpointLog.id_of(group, self.site)
        await self.execute("checkpoints", log_id, c.RecordCheckpoint(cp, tag, site))

    def recorded_checkpoints(self, group: str) -> list[dict[str, Any]]:
        """The checkpoints both site managers took of `group` through their APIs and operations."""
        ledger = self.layout.ledger
        logs = [ledger.get("checkpoints", i) for i in a.CheckpointLog.ids_of(group)]
        return [cp for log in logs for cp in log.state()["checkpoints"]]

"""Kept checkpoints at the recovery VDSA: follow CHECKPOINT_TAG commands on the mirrored control topic
(from its beginning, so holds survive a restart), and publish them (`tapstream checkpoint keep`).

The kept set is also saved beside the replicas (`<replica_dir>/<group>/kept.json`) and loaded before
the topic is read: a hold outlives the control topic's retention, which is days, while a checkpoint
may be kept for longer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.durable import atomic_write_json
from tapstream.core.kafka import AsyncProducer, producer_config
from tapstream.core.keep import Keeps, TagRequest, tag_command
from tapstream.core.logging import get_logger
from tapstream.core.records import Command
from tapstream.core.settings import TapstreamSettings
from tapstream.core.tag_follower import TagFollower

log = get_logger("tapstream.vdsa.holds")

OnChange = Callable[[TagRequest, bool], None]  # (request, kept now)


class HoldFollower:
    """Keeps `self.keeps` up to date; `caught_up` is set once everything present at start was read."""

    def __init__(
        self,
        settings: TapstreamSettings,
        groups: list[str],
        on_change: OnChange,
        state_dir: Path | None = None,
    ) -> None:
        self.groups = set(groups)
        self.state_dir = state_dir
        self.keeps = Keeps()
        self.on_change = on_change
        self.follower = TagFollower(settings, groups, "vdsa", on_caught_up=self._caught_up)
        self.caught_up = self.follower.caught_up
        self.topic = self.follower.topic
        self._task: asyncio.Task[None] | None = None
        self._unsaved: set[str] = set()  # groups whose kept.json could not be written

    def _saved(self, group: str) -> Path | None:
        return self.state_dir / group / "kept.json" if self.state_dir else None

    def _load(self) -> None:
        for g in self.groups:
            path = self._saved(g)
            if path and path.exists():
                self.keeps.load(g, json.loads(path.read_text()))
                log.info(
                    "kept checkpoints loaded",
                    group=g,
                    kept=sorted(self.keeps.kept_ids(g)),
                    file=str(path),
                )

    def _save(self, group: str) -> None:
        """Write the group's kept set; on an OSError (a full replica disk) keep following the topic,
        which still holds the commands, and try again on the next batch."""
        path = self._saved(group)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self.keeps.dump(group))
        except OSError as exc:
            if group not in self._unsaved:
                log.error(
                    "cannot save the kept checkpoints; holds still apply (the control topic has "
                    "them until its retention), retrying",
                    group=group,
                    file=str(path),
                    error=exc.strerror or repr(exc),
                )
            self._unsaved.add(group)
            return
        if group in self._unsaved:
            self._unsaved.discard(group)
            log.warning("kept checkpoints saved again", group=group, file=str(path))

    def start(self) -> None:
        self._load()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _caught_up(self) -> None:
        log.info(
            "control topic read",
            topic=self.topic,
            kept={g: sorted(self.keeps.kept_ids(g)) for g in sorted(self.groups)},
        )

    async def _apply(self, requests: list[TagRequest]) -> None:
        for group in list(self._unsaved):
            self._save(group)
        for req in requests:
            if self.keeps.apply(req):
                self._save(req.group)
                self.on_change(req, self.keeps.kept(req.group, req.checkpoint_id))

    async def _run(self) -> None:
        await self.follower.run(self._apply)


async def send_tag(
    settings: TapstreamSettings,
    group: str,
    checkpoint_id: str,
    tag: str | None,
    keep: bool,
    sender: str = "cli",
    reason: str = "",
) -> Command:
    """Publish a CHECKPOINT_TAG command on the protected cluster's control topic; returns the command."""
    codec = make_codec(settings)
    command = sign(
        tag_command(group, checkpoint_id, tag, keep, sender, now_us(), reason),
        Keyring.from_settings(settings),
    )
    producer = AsyncProducer(producer_config(settings, settings.protected_bootstrap, linger_ms=0))
    await producer.start()
    try:
        await producer.produce(
            settings.topic("control"), codec.encode("Command", command), key=group.encode()
        )
    finally:
        await producer.stop()
    return command

"""The protected VDSA's checkpoint coordinator: drives the agreement over tapstream.control."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from typing import Any

from tapstream.core.clock import now_us
from tapstream.core.codec import DecodeError, make_codec
from tapstream.core.control_auth import Keyring, Verifier, sign
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    make_consumer,
    producer_config,
)
from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings
from tapstream.vdsa.cut import LiveTappers, Round

log = get_logger("tapstream.vdsa.coordinator")


class CheckpointFailed(RuntimeError):
    """No crash-consistent cut could be agreed; the message says which tappers did not answer."""


class Coordinator:
    def __init__(
        self,
        settings: TapstreamSettings,
        prepare_timeout_s: float = 2.0,
        announce_window_s: float = 6.0,
        groups: Iterable[str] | None = None,
    ) -> None:
        self.s = settings
        # The groups it coordinates (None: any); other groups' commands are not checked or counted.
        self.groups = frozenset(groups) if groups is not None else None
        self.codec = make_codec(settings)
        self.ring = Keyring.from_settings(settings)
        # A forged ANNOUNCE or PREPARED would make a round wait for, or count, a tapper that holds
        # nothing: only the tappers' signed answers count.
        self.verifier = Verifier(settings, "vdsa", acts_on={"ANNOUNCE", "CHECKPOINT_PREPARED"})
        self.prepare_timeout_s = prepare_timeout_s
        self.live = LiveTappers(int(announce_window_s * 1e6))
        self.topic = settings.topic("control")
        self._rounds: dict[str, tuple[Round, asyncio.Event]] = {}
        self._producer: AsyncProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await ensure_topics(client_config(self.s), [TopicSpec(self.topic, partitions=1)])
        self._producer = AsyncProducer(producer_config(self.s, linger_ms=0))
        await self._producer.start()
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._caught_up.wait(), 30)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._producer:
            await self._producer.stop()

    async def _listen(self) -> None:
        # Read back the recent history first, so tappers that announced a moment ago count as live.
        from aiokafka import TopicPartition

        consumer = make_consumer(self.s, group_id=None, isolation_level="read_uncommitted")
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            start = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, max(start, end - 500))
            if end <= start:
                self._caught_up.set()
            async for msg in consumer:
                try:
                    _, cmd = self.codec.decode(msg.value)
                except DecodeError:
                    continue
                ours = self.groups is None or cmd["group"] in self.groups
                if ours and self.verifier.accept(cmd, now_us()):
                    self._on(cmd)
                if msg.offset + 1 >= end:
                    self._caught_up.set()
        finally:
            await consumer.stop()

    def _on(self, cmd: dict[str, Any]) -> None:
        if cmd["kind"] in ("ANNOUNCE", "CHECKPOINT_PREPARED"):
            self.live.announce(cmd["group"], cmd["sender"], cmd["ts"], cmd.get("volumes", []))
        if cmd["kind"] == "CHECKPOINT_PREPARED":
            entry = self._rounds.get(cmd.get("checkpoint_id") or "")
            if entry:
                rnd, done = entry
                rnd.on_prepared(cmd["sender"])
                if rnd.complete:
                    done.set()

    async def _send(
        self,
        kind: str,
        group: str,
        checkpoint_id: str,
        tag: str | None,
        args: dict[str, str] | None = None,
    ) -> None:
        assert self._producer is not None
        command = {
            "id": str(uuid.uuid4()),
            "group": group,
            "kind": kind,
            "sender": "vdsa",
            "ts": now_us(),
            "checkpoint_id": checkpoint_id,
            "tag": tag,
            "volumes": [],
            "args": args or {},
        }
        value = self.codec.encode("Command", sign(command, self.ring))
        await self._producer.produce(self.topic, value, key=group.encode())

    async def checkpoint(self, group: str, tag: str | None = None) -> str:
        """Agree a crash-consistent cut across every live tapper of `group`; returns its id."""
        async with self._lock:
            expected = frozenset(self.live.live(group, now_us()))
            if not expected:
                raise CheckpointFailed(
                    f"no live tapper serves group {group!r} (none announced in the last "
                    f"{self.live.window_us / 1e6:.0f}s): is the tapper running and protecting this group?"
                )
            cp = str(uuid.uuid4())
            rnd = Round(cp, group, expected)
            done = asyncio.Event()
            self._rounds[cp] = (rnd, done)
            try:
                await self._send("CHECKPOINT_PREPARE", group, cp, tag)
                try:
                    await asyncio.wait_for(done.wait(), self.prepare_timeout_s)
                except TimeoutError:
                    await self._send("CHECKPOINT_ABORT", group, cp, tag)
                    raise CheckpointFailed(
                        f"checkpoint of {group!r} aborted: {sorted(rnd.missing())} did not hold in "
                        f"{self.prepare_timeout_s}s; no marker was written"
                    ) from None
                await self._send("CHECKPOINT_COMMIT", group, cp, tag, {"cut_ts": str(now_us())})
            finally:
                self._rounds.pop(cp, None)
            log.info(
                "checkpoint committed",
                group=group,
                checkpoint=cp,
                tag=tag,
                tappers=sorted(expected),
            )
            return cp


async def create_checkpoint(settings: TapstreamSettings, group: str, tag: str | None = None) -> str:
    """One on-demand checkpoint (what a site manager does for `tapstream group checkpoint`)."""
    coord = Coordinator(settings, groups=[group])
    await coord.start()
    try:
        return await coord.checkpoint(group, tag)
    finally:
        await coord.stop()

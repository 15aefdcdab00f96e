"""Crash-consistent checkpoints (DESIGN §5, CONTRACTS "Checkpoint agreement"): hold, marker, release.

While a group's gate is held, requests of its volumes still execute and publish, but their replies
wait. A write whose reply went out before the hold is in its volume's stream before the marker; a
write issued after a held reply cannot exist yet; so no checkpoint contains W2 without W1.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer

from tapstream.core.codec import Codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import AsyncProducer
from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper import metrics
from tapstream.tapper.fencing import Fences, decode_command
from tapstream.tapper.publish import now_us

log = get_logger("tapstream.tapper.checkpoint")


class GroupGate:
    """Holds NBD completions of one protection group; `defer`red replies go out, in order, on release."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self._deferred: list[Callable[[], None]] = []
        # the compiled path's streams of the group's sync exports: they hold their own replies
        self.streams: list[Any] = []

    @property
    def held(self) -> bool:
        return self.holder is not None

    def hold(self, checkpoint_id: str) -> bool:
        """Hold completions for `checkpoint_id`; False if another checkpoint holds the gate."""
        if self.holder is not None:
            return self.holder == checkpoint_id
        self.holder = checkpoint_id
        for stream in self.streams:
            stream.set_held(True)
        return True

    def defer(self, send: Callable[[], None]) -> None:
        self._deferred.append(send)

    def send_or_defer(self, send: Callable[..., None], *args: Any) -> None:
        """`send(*args)` now, or on release while a checkpoint holds the group's completions."""
        if self.holder is not None:
            self._deferred.append(partial(send, *args))
        else:
            send(*args)

    def release(self, checkpoint_id: str | None = None) -> None:
        if checkpoint_id is not None and checkpoint_id != self.holder:
            return
        self.holder = None
        deferred, self._deferred = self._deferred, []
        for send in deferred:
            send()
        for stream in self.streams:
            stream.set_held(False)


def resync_ranges(spec: str, size: int) -> list[tuple[int, int]]:
    """A RESYNC's "start-end,start-end" (bytes, end exclusive) or "all", clipped to the volume."""
    if spec.strip() == "all":
        return [(0, size)] if size else []
    ranges = [(int(a), int(b)) for a, b in (r.split("-") for r in spec.split(","))]
    return [(a, min(b, size)) for a, b in ranges if 0 <= a < min(b, size)]


class MarkedVolume(Protocol):
    """What a checkpoint needs of an export."""

    name: str
    group: str
    fenced: str | None  # why writes are refused (PAUSE with writes=refuse), None: allowed

    @property
    def consistent(
        self,
    ) -> str | None: ...  # None, or why a marker now would not be a consistent cut

    def mark_checkpoint(
        self, checkpoint_id: str, ts: int, tag: str | None, volumes: list[str]
    ) -> asyncio.Future[Any]: ...


class Checkpoints:
    """This tapper's part in checkpoints: local ones, and the coordinator's over tapstream.control."""

    def __init__(
        self,
        settings: TapstreamSettings,
        codec: Codec,
        producer: AsyncProducer,
        volumes: Callable[[], Iterable[MarkedVolume]],
        gates: dict[str, GroupGate],
        sender: str,
        hold_timeout_s: float,
        publish_timeout_s: float,
        announce_interval_s: float,
        fences: Fences,
    ) -> None:
        self.s = settings
        self.codec = codec
        self.producer = producer
        self.volumes = volumes
        self.gates = gates
        self.sender = sender
        self.hold_timeout_s = hold_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.announce_interval_s = announce_interval_s
        self.fences = fences
        self.ring = Keyring.from_settings(settings)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, consumer: AIOKafkaConsumer) -> None:
        """`consumer`: on tapstream.control, past what `Fences.catch_up` replayed."""
        self._tasks = [
            asyncio.create_task(self._control_loop(consumer)),
            asyncio.create_task(self._announce_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.fences.save_all)  # the next start replays less
        for group in list(self.gates):
            self._release(group, None)

    def _group_volumes(self, group: str) -> list[MarkedVolume]:
        return [v for v in self.volumes() if v.group == group]

    def _inconsistent(self, group: str) -> str | None:
        for v in self._group_volumes(group):
            why = v.consistent
            if why is not None:
                metrics.CHECKPOINTS_REFUSED.labels(group).inc()
                log.warning(
                    "refusing a checkpoint: the cut would not be consistent",
                    group=group,
                    volume=v.name,
                    reason=why,
                )
                return f"{v.name}: {why}"
        return None

    async def local(
        self, group: str, checkpoint_id: str | None = None, tag: str | None = None
    ) -> str:
        """Hold completions, write the marker on every volume of `group` served here, release."""
        checkpoint_id = checkpoint_id or str(uuid.uuid4())
        gate = self.gates[group]
        if not gate.hold(checkpoint_id):
            raise RuntimeError(f"checkpoint {gate.holder} is in progress for group {group}")
        try:
            why = self._inconsistent(group)
            if why is not None:
                raise RuntimeError(f"no checkpoint of group {group} now: {why}")
            await self._write_markers(group, checkpoint_id, tag, now_us())
        finally:
            gate.release(checkpoint_id)
        return checkpoint_id

    async def _write_markers(
        self, group: str, checkpoint_id: str, tag: str | None, ts: int
    ) -> None:
        volumes = self._group_volumes(group)
        names = sorted(v.name for v in volumes)
        futures = [v.mark_checkpoint(checkpoint_id, ts, tag, names) for v in volumes]
        try:
            await asyncio.wait_for(asyncio.gather(*futures), self.publish_timeout_s)
            metrics.CHECKPOINTS.labels(group, "ok").inc()
        except Exception:
            metrics.CHECKPOINTS.labels(group, "failed").inc()
            raise

    async def _control_loop(self, consumer: AIOKafkaConsumer) -> None:
        """PAUSE/RESUME -> fence; PREPARE -> hold + PREPARED; COMMIT -> markers + release; ABORT -> release."""
        try:
            async for msg in consumer:
                cmd = decode_command(self.codec, msg.value)
                if cmd is None:
                    continue
                try:
                    # The fence first and in order: a move's final checkpoint cut follows it.
                    if await self.fences.on_command(cmd, msg.partition, msg.offset):
                        await self._on_command(cmd)
                except Exception as exc:  # one bad command must not end checkpoint participation
                    log.error("control command failed", kind=cmd.get("kind"), error=repr(exc))
        finally:
            await consumer.stop()

    async def _on_command(self, cmd: dict[str, Any]) -> None:
        group, kind, cp = cmd.get("group"), cmd.get("kind"), cmd.get("checkpoint_id")
        gate = self.gates.get(group or "")
        if kind == "RESUME":
            # Also the operator's word that a failed disk is fixed: probe it now (the probe decides).
            for v in self._group_volumes(group or ""):
                v.probe_now()  # type: ignore[attr-defined]
        if kind == "RESYNC" and gate is not None:
            # The site manager asks for regions to be sent again (reverse protection after an
            # unplanned failover: what the other side wrote after the checkpoint is undone from here).
            # args: {volume: "start-end,start-end" or "all"}; "all" when the recovery side halted
            # the volume on a gap. Marked first, so a crash resumes it as a DELTA.
            for v in self._group_volumes(group or ""):
                spec = (cmd.get("args") or {}).get(v.name)
                if not spec:
                    continue
                ranges = resync_ranges(spec, v.volume.size)  # type: ignore[attr-defined]
                for a, b in ranges:
                    v.bitmap.set_dirty(a, b - a)  # type: ignore[attr-defined]
                v.bitmap.sync()  # type: ignore[attr-defined]
                log.warning(
                    "resync requested",
                    group=group,
                    volume=v.name,
                    bytes=sum(b - a for a, b in ranges),
                )
                self._tasks.append(asyncio.create_task(v.sync_regions("DELTA", ranges)))  # type: ignore[attr-defined]
            return
        if gate is None or cp is None or group is None:
            return
        if kind == "CHECKPOINT_PREPARE":
            if self._inconsistent(group) is not None:
                return  # no PREPARED: the coordinator aborts after its timeout
            if gate.hold(cp):
                self._timers[cp] = asyncio.get_running_loop().call_later(
                    self.hold_timeout_s, self._hold_expired, group, cp
                )
                await self._send("CHECKPOINT_PREPARED", group, cp, cmd.get("tag"))
        elif kind == "CHECKPOINT_COMMIT" and gate.holder == cp:
            try:
                if self._inconsistent(group) is not None:
                    return  # released below; no marker
                ts = int((cmd.get("args") or {}).get("cut_ts", now_us()))
                await self._write_markers(group, cp, cmd.get("tag"), ts)
            finally:
                self._release(group, cp)
        elif kind == "CHECKPOINT_ABORT":
            self._release(group, cp)

    def _hold_expired(self, group: str, cp: str) -> None:
        log.warning(
            "checkpoint hold timed out; releasing completions without a marker",
            group=group,
            checkpoint=cp,
        )
        metrics.CHECKPOINTS.labels(group, "timeout").inc()
        self._release(group, cp)

    def _release(self, group: str, cp: str | None) -> None:
        if cp is not None:
            timer = self._timers.pop(cp, None)
            if timer:
                timer.cancel()
        self.gates[group].release(cp)

    async def _send(
        self, kind: str, group: str, cp: str | None = None, tag: str | None = None
    ) -> None:
        command = {
            "id": str(uuid.uuid4()),
            "group": group,
            "kind": kind,
            "sender": self.sender,
            "ts": now_us(),
            "checkpoint_id": cp,
            "tag": tag,
            "volumes": sorted(v.name for v in self._group_volumes(group)),
            "args": {},
        }
        value = self.codec.encode("Command", sign(command, self.ring))
        await self.producer.produce(self.s.topic("control"), value, key=group.encode())

    async def _announce_loop(self) -> None:
        """Tell the coordinator which volumes of which groups this tapper serves."""
        while True:
            for group in self.gates:
                try:
                    await asyncio.wait_for(self._send("ANNOUNCE", group), self.publish_timeout_s)
                except Exception as exc:
                    log.warning(
                        "could not announce on tapstream.control", group=group, error=repr(exc)
                    )
            await asyncio.sleep(self.announce_interval_s)

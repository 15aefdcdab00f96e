"""Keeps each served group's write fence (fence.py) in force across restarts.

At start, before the NBD server listens: the saved fences, then tapstream.control replayed from the
offsets they were saved at to the topic's end, so a PAUSE sent while this tapper was down fences it
too. Only PAUSE/RESUME count in that replay; the consumer then goes on from the end, so checkpoint
and resync commands older than the start are never acted on. History rather than a per-host
consumer group: the site manager runs one tapper per group under one host id (one group would split
the partition between them), and an offset saved in the same file as the fence cannot disagree
with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer

from tapstream.core.codec import Codec, DecodeError
from tapstream.core.control_auth import Verifier
from tapstream.core.kafka import make_consumer
from tapstream.core.kafka.consumer import partitions_now
from tapstream.core.logging import get_logger
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper import metrics
from tapstream.tapper.fence import Fence, FenceFile, decide

log = get_logger("tapstream.tapper.fencing")
# What the tapper does on tapstream.control (checkpoint.py): each needs a signature when keys are set.
ACTS_ON = frozenset(
    ("PAUSE", "RESUME", "RESYNC", "CHECKPOINT_PREPARE", "CHECKPOINT_COMMIT", "CHECKPOINT_ABORT")
)
SAVE_OFFSETS_EVERY_S = 60.0  # bounds what the next start replays
CATCH_UP_TIMEOUT_S = 30.0  # without a record: Kafka does not answer


class FencedVolume(Protocol):
    group: str
    fenced: str | None


class Fences:
    def __init__(
        self,
        state_dir: Path,
        groups: Iterable[str],
        volumes: Callable[[], Iterable[FencedVolume]],
    ) -> None:
        self.files = {g: FenceFile(state_dir, g) for g in groups}
        self.state: dict[str, Fence] = {}
        self.volumes = volumes
        self.position: dict[int, int] = {}  # next control offset per partition, all before applied
        self.verifier: Verifier | None = None  # set by catch_up, from the settings
        self._saved_at = time.monotonic()

    def load(self) -> None:
        """The saved fences, in force at once (raises on a corrupt file: a lost fence is split brain)."""
        for group, file in self.files.items():
            self.state[group] = file.read()
            self._enforce(group)
            if self.state[group].fenced:
                log.warning(
                    "writes refused: the group was fenced before this start",
                    group=group,
                    owners=sorted(self.state[group].owners),
                )

    async def catch_up(self, settings: TapstreamSettings, codec: Codec) -> AIOKafkaConsumer:
        """Replay tapstream.control up to its end; returns a consumer positioned there."""
        topic = settings.topic("control")
        # Signed, and each command once and near its ts: a replayed old PAUSE must not fence again.
        self.verifier = Verifier(settings, "tapper", acts_on=ACTS_ON, replay_guard=True)
        consumer = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
        await consumer.start()
        try:
            tps = await partitions_now(consumer, topic)
            consumer.assign(tps)
            lows = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                saved = [f.offsets.get(tp.partition, -1) for f in self.state.values()]
                start = min(saved, default=-1)
                if not lows[tp] <= start <= ends[tp]:
                    start = lows[tp]  # never read, past retention, or a recreated topic
                consumer.seek(tp, start)
            pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            replayed = 0
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no record from {topic} in {CATCH_UP_TIMEOUT_S}s")
                batches = await consumer.getmany(*pending, timeout_ms=1000)
                if batches:  # a long history is fine as long as it keeps coming
                    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
                for tp, msgs in batches.items():
                    for msg in msgs:
                        if msg.offset >= ends[tp]:
                            break
                        cmd = decode_command(codec, msg.value)
                        # In the replay, "now" is when the broker took the record.
                        if cmd is not None and cmd.get("kind") in ("PAUSE", "RESUME"):
                            if self.accept(cmd, msg.timestamp * 1000):
                                self.apply(cmd)
                        replayed += 1
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            for tp in tps:
                consumer.seek(tp, ends[tp])  # what comes next is live
                self.position[tp.partition] = ends[tp]
        except BaseException:
            await consumer.stop()
            raise
        await asyncio.to_thread(self.save_all)
        log.info(
            "fences caught up on tapstream.control",
            replayed=replayed,
            fenced=sorted(g for g, f in self.state.items() if f.fenced),
        )
        return consumer

    def apply(self, cmd: dict[str, Any]) -> bool:
        """Apply a command to its group's fence in memory; True if the fence changed."""
        fence = self.state.get(str(cmd.get("group")))
        if fence is None:
            return False
        decision = decide(fence, cmd)
        if decision.warning:
            log.warning(decision.warning, group=fence.group, command=cmd.get("id"))
        if not decision.changed:
            return False
        self.state[fence.group] = decision.fence
        self._enforce(fence.group)
        log.warning(
            "writes refused" if decision.fence.fenced else "writes allowed",
            group=fence.group,
            command=cmd.get("kind"),
            owners=sorted(decision.fence.owners),
        )
        return True

    def accept(self, cmd: dict[str, Any], now_us: int) -> bool:
        """Whether `cmd` may be acted on (core.control_auth); the others are logged and counted.
        Commands of groups not served here are acted on by nobody here: neither checked nor counted."""
        if self.verifier is None or cmd.get("group") not in self.state:
            return True
        return self.verifier.accept(cmd, now_us)

    async def on_command(self, cmd: dict[str, Any], partition: int, offset: int) -> bool:
        """A live command: applied at once, saved before the next command is read. False: it is
        not to be acted on (unsigned, badly signed or replayed), yet read past."""
        self.position[partition] = offset + 1
        accepted = self.accept(cmd, time.time_ns() // 1000)
        changed = accepted and self.apply(cmd)
        if changed or time.monotonic() - self._saved_at > SAVE_OFFSETS_EVERY_S:
            try:
                await asyncio.to_thread(self.save_all)
            except OSError as exc:  # the fence holds in memory; the next start replays from older
                log.error("could not save the write fence", error=repr(exc))
        return accepted

    def save_all(self) -> None:
        for group, fence in self.state.items():
            fence = self.state[group] = replace(fence, offsets=dict(self.position))
            self.files[group].write(fence)
        self._saved_at = time.monotonic()

    def _enforce(self, group: str) -> None:
        fence = self.state[group]
        for v in self.volumes():
            if v.group == group:
                v.fenced = fence.reason
        metrics.FENCED.labels(group).set(1 if fence.fenced else 0)


def decode_command(codec: Codec, value: bytes | None) -> dict[str, Any] | None:
    """The Command in `value`, or None for a tombstone or a record that is not one."""
    if value is None:
        return None
    try:
        return codec.decode_as(value, "Command")
    except DecodeError:
        return None

"""Following CHECKPOINT_TAG: the mirrored control topic, read from its beginning (no committed
offsets, so a restart or a rebuilt index gets every tag back), each command checked like any other,
the usable requests of our groups handed on poll by poll.

The journal's index and the recovery VDSA's holds both follow it through this one reader, so the
index cannot show released a checkpoint the replica still keeps, or the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import ConsumerRecord

from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Verifier
from tapstream.core.dlq import Poison, classify
from tapstream.core.kafka import make_consumer, partitions_now
from tapstream.core.keep import TagRequest, parse_tag_command
from tapstream.core.settings import TapstreamSettings

OnBatch = Callable[[list[TagRequest]], Awaitable[None]]
OnPoison = Callable[[ConsumerRecord, Poison], object]  # e.g. a copy to the dead-letter topic


class TagFollower:
    """`caught_up` is set once everything present at start was read (or there is no topic yet)."""

    def __init__(
        self,
        settings: TapstreamSettings,
        groups: Iterable[str],
        service: str,
        *,
        on_poison: OnPoison | None = None,
        on_caught_up: Callable[[], None] | None = None,
        absent_poll_s: float = 2.0,
    ) -> None:
        self.s = settings
        self.groups = frozenset(groups)
        self.codec = make_codec(settings)
        # An unsigned release would let the replica run past (or the index show released) a
        # checkpoint kept after an alert.
        self.verifier = Verifier(settings, service, acts_on={"CHECKPOINT_TAG"})
        self.on_poison = on_poison
        self.on_caught_up = on_caught_up
        self.absent_poll_s = absent_poll_s
        self.topic = settings.mirrored(settings.topic("control"))
        self.caught_up = asyncio.Event()

    def requests(self, msgs: Iterable[ConsumerRecord]) -> list[TagRequest]:
        """The usable, accepted CHECKPOINT_TAG requests of our groups among `msgs`, in order."""
        out = []
        for msg in msgs:
            cmd, poison = classify(msg.value, self.codec, "Command")
            if cmd is None:
                if self.on_poison is not None and poison is not None:
                    self.on_poison(msg, poison)
                continue
            if cmd.get("group") not in self.groups:
                continue  # another service's: neither checked nor counted here
            if not self.verifier.accept(cmd, now_us()):
                continue
            req = parse_tag_command(cmd)
            if req is not None and req.group in self.groups:
                out.append(req)
        return out

    async def run(self, on_batch: OnBatch) -> None:
        """Follow the topic until cancelled; `on_batch` gets each poll's requests (maybe none)."""
        consumer = make_consumer(self.s, group_id=None, metadata_max_age_ms=2000)
        await consumer.start()
        try:
            tps = await partitions_now(consumer, self.topic)
            # No mirrored control topic yet: nothing was ever asked to be kept; it is read once it
            # appears (MirrorMaker 2 creates it with the first command it carries).
            while not tps:
                self.caught_up.set()
                await asyncio.sleep(self.absent_poll_s)
                tps = await partitions_now(consumer, self.topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while True:
                if not self.caught_up.is_set() and all(
                    [await consumer.position(tp) >= end[tp] for tp in tps]
                ):
                    if self.on_caught_up is not None:
                        self.on_caught_up()
                    self.caught_up.set()
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                await on_batch(self.requests(m for msgs in batch.values() for m in msgs))
        finally:
            await consumer.stop()

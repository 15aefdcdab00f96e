"""One protected volume as the NBD server sees it: the volume, its event stream, its dirty bitmap,
its group's checkpoint gate and its mode (modes.py holds the two write paths).

Also what keeps the stream whole: initial and delta syncs (SyncStart/SyncBlock/SyncEnd), and the
recovery after Kafka refused or timed out an event: wait until nothing is in flight, ask Kafka for
the volume's last seq (the truth: an ambiguous timeout may or may not have landed), continue after
it, and resend the dirty regions as a DELTA sync.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.checkpoint import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.modes import AsyncMode, Reply, SyncMode, os_error
from tapstream.tapper.protocol.constants import Err
from tapstream.tapper.publish import SeqFile, VolumeStream, now_us
from tapstream.tapper.settings import VolumeSpec
from tapstream.tapper.volume import Volume

log = get_logger("tapstream.tapper.export")


class Export:
    def __init__(
        self,
        spec: VolumeSpec,
        volume: Volume,
        bitmap: DirtyBitmap,
        gate: GroupGate,
        publish_timeout_s: float,
        find_last_seq: Callable[[], int],
        seq_file: SeqFile,
        backlog_bytes: int = 64 << 20,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.group = spec.group
        self.volume = volume
        self.bitmap = bitmap
        self.gate = gate
        self.stream: VolumeStream  # attached by `attach` (the stream reports failures back here)
        self.mode: SyncMode | AsyncMode
        self.publish_timeout_s = publish_timeout_s
        self.backlog_bytes = backlog_bytes
        self._find_last_seq = find_last_seq
        self._seq_file = seq_file
        self._recovering: asyncio.Task[None] | None = None
        self._again = False
        self._bitmap_dirty = False
        self._bitmap_syncing = False
        self._last_sweep = 0.0
        self.fenced: str | None = (
            None  # why writes are refused (a move or failback stopped this side)
        )

    def attach(self, stream: VolumeStream) -> None:
        self.stream = stream
        self.mode = (
            SyncMode(self, self.publish_timeout_s)
            if self.spec.mode == "sync"
            else AsyncMode(self, self.backlog_bytes)
        )

    # --- requests (see modes.py) -----------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        return self.volume.read(offset, length)

    def write(self, offset: int, data: bytes, fua: bool, reply: Reply) -> None:
        if self.fenced:
            reply(Err.EPERM, self.fenced)
            return
        self.mode.write(offset, data, fua, reply)

    def zero(
        self, offset: int, length: int, trim: bool, punch: bool, fua: bool, reply: Reply
    ) -> None:
        if self.fenced:
            reply(Err.EPERM, self.fenced)
            return
        self.mode.zero(offset, length, trim, punch, fua, reply)

    def flush(self, reply: Reply) -> None:
        self.mode.flush(reply)

    def durable_locally(self, reply: Reply, bitmap: bool = False) -> None:
        """fdatasync the volume (and the bitmap) off the event loop, then reply."""

        def sync() -> None:
            self.volume.sync()
            if bitmap:
                self.bitmap.sync()

        def done(fut: asyncio.Future[None]) -> None:
            exc = fut.exception()
            if exc is None:
                reply(0, "")
            else:
                log.error("fdatasync failed", volume=self.name, error=str(exc))
                reply(os_error(exc), str(exc))

        asyncio.get_running_loop().run_in_executor(None, sync).add_done_callback(done)

    # --- failures --------------------------------------------------------------------------------
    def refused(self, offset: int, length: int) -> None:
        """Kafka refused an event (sync mode): its range must be resent; the stream needs repair."""
        if length:
            self.bitmap.set_dirty(offset, length)
            self._persist_bitmap()
        self.stream_failed(RuntimeError("event refused"))

    def timed_out(self, offset: int, length: int) -> None:
        log.error(
            "kafka did not ack in time; failing the request with EIO",
            volume=self.name,
            timeout_s=self.publish_timeout_s,
            hint="check the brokers (`make status`) and the network",
        )
        metrics.PUBLISH_TIMEOUTS.labels(self.name).inc()
        self.refused(offset, length)

    def stream_failed(self, exc: BaseException) -> None:
        """Called by the stream for every refused event: start (or re-run) the recovery."""
        if self.stream.healthy:
            log.error(
                "publishing failed; the stream recovers once Kafka answers",
                volume=self.name,
                error=repr(exc),
                seq=self.stream.seq,
            )
        self.stream.healthy = False
        metrics.STREAM_HEALTHY.labels(self.name).set(0)
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())
        else:
            self._again = True

    async def _recover(self) -> None:
        delay = 0.5
        while True:
            self._again = False
            self.stream.healthy = False
            await self.stream.settled()
            try:
                seq = await asyncio.to_thread(self._find_last_seq)
            except Exception as exc:
                log.warning(
                    "kafka still unreachable; retrying",
                    volume=self.name,
                    error=repr(exc),
                    in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if seq != self.stream.seq:
                log.warning(
                    "continuing after the last seq kafka holds",
                    volume=self.name,
                    kafka_seq=seq,
                    allocated_seq=self.stream.seq,
                )
            self.stream.restart_at(seq)
            self.stream.healthy = True
            metrics.STREAM_HEALTHY.labels(self.name).set(1)
            self.mode.stream_healthy()
            self.bitmap.sweep()
            ranges = self.bitmap.dirty_ranges(only_orphans=True)
            if ranges:
                await self.sync_regions("DELTA", ranges)
            if not self._again and self.stream.healthy:
                log.info("stream recovered", volume=self.name, seq=self.stream.seq)
                return

    def _persist_bitmap(self) -> None:
        """Make set_dirty marks durable soon (one msync at a time, off the loop)."""
        self._bitmap_dirty = True
        if self._bitmap_syncing:
            return
        self._bitmap_syncing = True

        async def run() -> None:
            try:
                while self._bitmap_dirty:
                    self._bitmap_dirty = False
                    await asyncio.to_thread(self.bitmap.sync)
            finally:
                self._bitmap_syncing = False

        asyncio.get_running_loop().create_task(run())

    # --- syncs and checkpoints -------------------------------------------------------------------
    def mark_checkpoint(
        self, checkpoint_id: str, ts: int, tag: str | None, volumes: list[str]
    ) -> asyncio.Future[Any]:
        return self.stream.publish(
            "Checkpoint",
            {
                "id": checkpoint_id,
                "ts": ts,
                "tag": tag,
                "volumes": volumes,
                "volume_size": self.volume.size,
            },
        )

    @property
    def consistent(self) -> str | None:
        """None if a checkpoint marker may be cut now, else why not (the stream lacks some writes)."""
        if not self.stream.healthy:
            return "the event stream is recovering from a Kafka failure"
        if getattr(self.mode, "ahead", False):
            return "kafka is behind and the volume is catching up (async mode)"
        if self.bitmap.orphans():
            return "dirty regions are still being resent"
        return None

    async def sync_regions(self, kind: str, ranges: list[tuple[int, int]]) -> int:
        """Publish SyncStart, the current content of `ranges` as SyncBlocks (up to a chunk each),
        SyncEnd. Each block's regions stay marked in the bitmap until Kafka acked it, so a crash
        mid-sync resumes as a DELTA. All-zero blocks are skipped in an INITIAL sync (a blank replica
        reads zeroes) but sent in a DELTA (the replica may hold older data there). The stream's
        backlog stays under `backlog_bytes`. Returns the bytes sent."""
        sync_id = str(uuid.uuid4())
        total = sum(b - a for a, b in ranges)
        stream = self.stream
        step = max(
            self.bitmap.granule, stream.chunk_bytes // self.bitmap.granule * self.bitmap.granule
        )
        ends = [
            stream.publish(
                "SyncStart",
                {
                    "sync_id": sync_id,
                    "kind": kind,
                    "volume_size": self.volume.size,
                    "bytes_total": total,
                },
            )
        ]
        sent = blocks = 0
        zero = bytes(step)
        last_log = time.monotonic()
        for start, end in ranges:
            for pos in range(start, end, step):
                if stream.outstanding_bytes > self.backlog_bytes // 2:
                    await stream.backlog_below(self.backlog_bytes // 4)
                if not stream.healthy:
                    log.warning(
                        "sync interrupted by a publishing failure", volume=self.name, kind=kind
                    )
                    return sent
                n = min(step, end - pos)
                regions, _ = self.bitmap.mark(pos, n)
                data = self.volume.read(pos, n)
                if kind == "INITIAL" and data == zero[:n]:
                    self.bitmap.release(regions)
                    continue
                stream.publish_data(pos, data, _block_done(self.bitmap, regions), sync_id=sync_id)
                sent += n
                blocks += 1
                if time.monotonic() - last_log > 2:
                    log.info(
                        "sync progress",
                        volume=self.name,
                        kind=kind,
                        sent_bytes=sent,
                        total_bytes=total,
                        percent=round(100 * sent / max(total, 1), 1),
                    )
                    last_log = time.monotonic()
        ends.append(
            stream.publish("SyncEnd", {"sync_id": sync_id, "blocks": blocks, "bytes": sent})
        )
        await asyncio.gather(*ends, return_exceptions=True)
        metrics.SYNC_BYTES.labels(self.name, kind).inc(sent)
        log.info("sync done", volume=self.name, kind=kind, bytes=sent, blocks=blocks, ts=now_us())
        return sent

    # --- housekeeping ----------------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Every ~second: fail overdue requests, clear acked regions, refresh gauges, save the seq."""
        self.mode.watchdog(now)
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            self.bitmap.sweep()
        metrics.DIRTY_BYTES.labels(self.name).set(self.bitmap.dirty_bytes())

    def save_seq(self) -> None:
        self._seq_file.write(self.stream.acked_seq)

    async def drain(self) -> None:
        """Wait until every request was answered and every event acked or refused."""
        while self.mode.in_flight():
            self.mode.watchdog(time.monotonic())
            await asyncio.sleep(0.01)
        await self.stream.settled()


def _block_done(bitmap: DirtyBitmap, regions: range) -> Callable[[bool], None]:
    return lambda ok: bitmap.release(regions) if ok else bitmap.fail(regions)

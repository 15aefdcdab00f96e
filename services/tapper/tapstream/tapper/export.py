"""One protected volume as the NBD server sees it: the write path, top to bottom.

request -> local write -> event(s) -> publish -> (sync: wait for Kafka's ack) -> reply.
Async mode marks the regions in the dirty bitmap before the local write and clears them when Kafka
acks, so a crash leaves exactly the regions whose events may be missing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.checkpoint_gate import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.publish import VolumeStream, now_us
from tapstream.tapper.settings import VolumeSpec
from tapstream.tapper.volume import Volume

log = get_logger("tapstream.tapper.export")


class PublishTimeout(OSError):
    """Kafka did not ack in time (sync mode): the request fails with EIO."""


class Export:
    def __init__(self, spec: VolumeSpec, volume: Volume, stream: VolumeStream, gate: GroupGate,
                 bitmap: DirtyBitmap | None, publish_timeout_s: float) -> None:
        self.spec = spec
        self.name = spec.name
        self.volume = volume
        self.stream = stream
        self.gate = gate
        self.bitmap = bitmap
        self.sync_mode = spec.mode == "sync"
        self.timeout = publish_timeout_s
        self._pending: set[asyncio.Future[Any]] = set()

    # --- the write path --------------------------------------------------------------------------
    async def write(self, offset: int, data: bytes | memoryview, fua: bool) -> None:
        regions = self.bitmap.mark(offset, len(data)) if self.bitmap is not None else None
        self.volume.write(offset, data)
        futures = self.stream.publish_write(offset, data)
        await self._settle(futures, regions)
        if fua:
            await asyncio.to_thread(self.volume.sync)

    async def zero(self, offset: int, length: int, trim: bool, punch: bool) -> None:
        regions = self.bitmap.mark(offset, length) if self.bitmap is not None else None
        self.volume.zero(offset, length, punch)
        await self._settle([self.stream.publish("Zero", {"offset": offset, "length": length, "trim": trim})], regions)

    async def flush(self) -> None:
        fut = self.stream.publish("Flush", {"fua": False})
        await asyncio.to_thread(self.volume.sync)
        if self.bitmap is not None:
            self.bitmap.sync()
        await self._settle([fut], None)

    def read(self, offset: int, length: int) -> bytes:
        return self.volume.read(offset, length)

    async def _settle(self, futures: list[asyncio.Future[Any]], regions: range | None) -> None:
        """Sync mode: wait for Kafka's ack (EIO after the timeout). Async: track it in the background."""
        t0 = time.perf_counter()
        done = asyncio.gather(*futures)
        if self.sync_mode:
            try:
                await asyncio.wait_for(asyncio.shield(done), self.timeout)
            except TimeoutError:
                metrics.PUBLISH_ERRORS.labels(self.name).inc()
                log.error("kafka did not ack in time; failing the request with EIO", volume=self.name,
                          timeout_s=self.timeout, hint="check the brokers (`make status`) and the network")
                raise PublishTimeout(5, "Kafka did not acknowledge the event in time") from None
            except Exception as exc:
                metrics.PUBLISH_ERRORS.labels(self.name).inc()
                log.error("kafka refused the event; failing the request with EIO", volume=self.name, error=str(exc))
                raise PublishTimeout(5, str(exc)) from None
            metrics.PUBLISH_LATENCY.labels("sync").observe(time.perf_counter() - t0)
            if regions is not None and self.bitmap is not None:
                self.bitmap.release(regions)
            return
        self._pending.add(done)
        done.add_done_callback(lambda f: self._acked(f, regions, t0))

    def _acked(self, fut: asyncio.Future[Any], regions: range | None, t0: float) -> None:
        self._pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            metrics.PUBLISH_ERRORS.labels(self.name).inc()
            log.error("async publish failed; region stays dirty for the next delta sync", volume=self.name,
                      error=repr(fut.exception()) if not fut.cancelled() else "cancelled")
            if regions is not None and self.bitmap is not None:
                self.bitmap.fail(regions)
            return
        metrics.PUBLISH_LATENCY.labels("async").observe(time.perf_counter() - t0)
        if regions is not None and self.bitmap is not None:
            self.bitmap.release(regions)
            metrics.DIRTY_BYTES.labels(self.name).set(self.bitmap.dirty_bytes())

    async def drain(self) -> None:
        """Wait for every background publish of this export (async mode) to settle."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- checkpoints and syncs ------------------------------------------------------------------
    def mark_checkpoint(self, checkpoint_id: str, ts: int, tag: str | None, volumes: list[str]) -> asyncio.Future[Any]:
        return self.stream.publish("Checkpoint", {"id": checkpoint_id, "ts": ts, "tag": tag, "volumes": volumes,
                                                   "volume_size": self.volume.size})

    async def sync_regions(self, kind: str, regions: list[tuple[int, int]], granule: int) -> int:
        """Publish SyncStart, the current content of `regions` as SyncBlocks, SyncEnd; wait for acks.

        All-zero granules are skipped in an INITIAL sync (a blank replica already reads zeroes) but
        sent in a DELTA (the replica may hold older data there). Returns bytes sent."""
        sync_id = str(uuid.uuid4())
        total = sum(b - a for a, b in regions)
        futures = [self.stream.publish("SyncStart", {"sync_id": sync_id, "kind": kind,
                                                     "volume_size": self.volume.size, "bytes_total": total})]
        sent = blocks = 0
        zero = bytes(granule)
        last_log = time.monotonic()
        for start, end in regions:
            for pos in range(start, end, granule):
                n = min(granule, end - pos, self.volume.size - pos)
                data = self.volume.read(pos, n)
                if kind == "INITIAL" and data == zero[:n]:
                    continue
                futures += self.stream.publish_write(pos, data, branch="SyncBlock", extra={"sync_id": sync_id})
                sent += n
                blocks += 1
                if len(futures) >= 256:
                    await asyncio.gather(*futures)
                    futures = []
                if time.monotonic() - last_log > 2:
                    log.info("sync progress", volume=self.name, kind=kind, sent_bytes=sent, total_bytes=total)
                    last_log = time.monotonic()
        futures.append(self.stream.publish("SyncEnd", {"sync_id": sync_id, "blocks": blocks, "bytes": sent}))
        await asyncio.gather(*futures)
        metrics.SYNC_BYTES.labels(self.name, kind).inc(sent)
        log.info("sync done", volume=self.name, kind=kind, bytes=sent, blocks=blocks, ts=now_us())
        return sent

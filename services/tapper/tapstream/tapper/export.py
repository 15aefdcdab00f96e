"""One protected volume as the NBD server sees it: the volume, its event stream, its dirty bitmap,
its group's checkpoint gate and its mode (modes.py holds the two write paths; the export is their
`Host`).

Also what keeps the stream whole: initial and delta syncs (SyncStart/SyncBlock/SyncEnd), and the
recovery after Kafka refused or timed out an event: wait until nothing is in flight, ask Kafka for
the volume's last seq (the truth: an ambiguous timeout may or may not have landed), continue after
it, and resend the dirty regions as a DELTA sync. Likewise after a local I/O error: the volume
refuses writes until a probe re-wrote and fdatasynced the failed ranges, then resends them.
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
from tapstream.tapper.local_health import LocalHealth, Range, merge
from tapstream.tapper.modes import AsyncMode, SyncMode, WriteMode
from tapstream.tapper.protocol.constants import Err
from tapstream.tapper.protocol.errors import Reply, os_error
from tapstream.tapper.publish import SeqFile, VolumeStream, continue_after, now_us
from tapstream.tapper.settings import VolumeSpec
from tapstream.tapper.volume import Volume
from tapstream.tapper.zeroing import ZEROING, RangeGate

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
        find_seqs_since: Callable[[int], set[int]] | None = None,
        bitmap_cool_s: float = 0.0,
        backlog_bytes: int = 64 << 20,
        inline_zero_bytes: int = 8 << 20,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.group = spec.group
        self.volume = volume
        self.bitmap = bitmap
        self.gate = gate
        self.stream: VolumeStream  # attached by `attach` (the stream reports failures back here)
        self.mode: WriteMode  # made by `attach`
        self.publish_timeout_s = publish_timeout_s
        self.backlog_bytes = backlog_bytes
        self.inline_zero_bytes = inline_zero_bytes
        self.ranges = RangeGate()  # ranges being zeroed off the loop, and requests held behind them
        self._find_last_seq = find_last_seq
        self._find_seqs_since = find_seqs_since
        self._first_failed = 0  # the lowest refused seq the recovery has not checked yet
        self.bitmap_cool_s = bitmap_cool_s  # the housekeeping's sweep lets released regions cool
        self._seq_file = seq_file
        self._recovering: asyncio.Task[None] | None = None
        self._again = False
        self._bitmap_dirty = False
        self._bitmap_syncing = False
        self._last_sweep = 0.0
        self._fenced: str | None = (
            None  # why writes are refused (a move or failback stopped this side)
        )
        self.health = LocalHealth()  # local I/O errors: refuse writes until a probe succeeds
        self._unsynced: set[int] = set()  # bitmap regions written since the last fdatasync began
        self._probe: asyncio.Task[None] | None = None
        metrics.VOLUME_FAILED.labels(self.name).set(0)

    @property
    def fenced(self) -> str | None:
        return self._fenced

    @fenced.setter
    def fenced(self, reason: str | None) -> None:
        self._fenced = reason
        self.sync_lane()

    def sync_lane(self) -> None:
        """Tell the compiled path (native.py) which of the export's states close it to writes."""
        stream = getattr(self, "stream", None)
        if stream is None:  # not attached yet: `attach` comes before any request
            return
        stream.set_flag("fenced", bool(self._fenced))
        stream.set_flag("disk_failed", self.health.failed)
        stream.set_flag("zeroing", bool(self.ranges.busy or len(self.ranges)))

    def _unsynced_now(self) -> set[int]:
        """Bitmap regions written since the last fdatasync began, the compiled path's included."""
        self._unsynced.update(self.stream.take_written())
        return self._unsynced

    def attach(self, stream: VolumeStream) -> None:
        self.stream = stream
        if hasattr(stream, "on_refused"):
            stream.on_refused = self.refused
        if self.spec.mode == "sync":
            self.mode = SyncMode(self, self.volume, stream, self.publish_timeout_s)
        else:
            self.mode = mode = AsyncMode(self, self.volume, stream, self.bitmap, self.backlog_bytes)
            if hasattr(stream, "on_ahead"):
                stream.on_ahead = mode.go_ahead  # the compiled path went ahead on its own

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

    # --- touching the disk (zeroing.py) -----------------------------------------------------------
    def when_clear(
        self, offset: int, end: int, reply: Reply, run: Callable[..., None], *args: Any
    ) -> None:
        """`run(*args)`, a request's disk step, now or after the zeroing it overlaps (its event
        after the Zero's). A held request fails on its own: EIO for an unexpected error."""
        ranges = self.ranges
        if not ranges.busy and not ranges.held:
            run(*args)  # nothing being zeroed (almost always): no closure, no scan; errors go up
            return

        def guarded() -> None:
            try:
                run(*args)
            except Exception as exc:
                log.exception(
                    "request failed", volume=self.name, offset=offset, length=end - offset
                )
                reply(Err.EIO, repr(exc))

        self.ranges.run_when_clear(offset, end, guarded)

    def zero_locally(
        self,
        offset: int,
        length: int,
        punch: bool,
        then: Callable[[OSError | None], None],
        reply: Reply,
    ) -> None:
        """Zero the range on disk, then `then(error)`: inline when small, else in the zeroing
        thread while the event loop serves everyone else."""
        if length <= self.inline_zero_bytes:
            try:
                self.volume.zero(offset, length, punch)
            except OSError as exc:
                then(exc)
                return
            then(None)
            return
        end = offset + length
        self.ranges.begin(offset, end)
        self.stream.set_flag("zeroing", True)  # writes wait behind it in the Python path
        metrics.ZEROING.inc()

        def done(fut: asyncio.Future[None]) -> None:
            metrics.ZEROING.dec()
            exc = fut.exception() if not fut.cancelled() else OSError(5, "zeroing cancelled")
            error = exc if isinstance(exc, OSError) or exc is None else OSError(5, repr(exc))
            try:
                then(error)
            except Exception as e:
                log.exception("zero failed", volume=self.name, offset=offset, length=length)
                reply(Err.EIO, repr(e))
            for start, stop, run in self.ranges.end(offset, end):  # their events after the Zero's
                self.ranges.run_when_clear(start, stop, run)
            self.sync_lane()

        asyncio.get_running_loop().run_in_executor(
            ZEROING, self.volume.zero, offset, length, punch
        ).add_done_callback(done)

    def durable_locally(self, reply: Reply, bitmap: bool = False) -> None:
        """fdatasync the volume (and the bitmap) off the event loop, then reply."""

        covered, self._unsynced = self._unsynced_now(), set()

        def sync() -> None:
            self.volume.sync()
            if bitmap:
                self.bitmap.sync()

        def done(fut: asyncio.Future[None]) -> None:
            exc = fut.exception()
            if exc is None:
                reply(0, "")
            elif isinstance(exc, OSError):
                self._unsynced |= covered  # their pages may be gone: the probe re-writes them
                reply(*self.io_failed("flush", exc, 0, 0))
            else:
                log.error("fdatasync failed", volume=self.name, error=repr(exc))
                reply(os_error(exc), str(exc))

        asyncio.get_running_loop().run_in_executor(None, sync).add_done_callback(done)

    # --- local I/O faults (local_health.py) -------------------------------------------------------
    @property
    def disk_failed(self) -> bool:
        return self.health.failed

    def refuse_if_failed(self, reply: Reply) -> bool:
        """Answer a write or flush with the volume's error while its disk is failed."""
        refusal = self.health.refusal()
        if refusal is None:
            return False
        reply(Err.ENOSPC if refusal[0] == Err.ENOSPC else Err.EIO, refusal[1])
        return True

    def wrote(self, offset: int, length: int) -> None:
        """A local write or zero succeeded: until an fdatasync covers it, a failed one may lose it."""
        self._unsynced.update(self.bitmap.regions(offset, length))

    def io_failed(self, op: str, exc: OSError, offset: int, length: int) -> tuple[int, str]:
        """A local write, zero or fdatasync failed: mark what the disk may now disagree with dirty
        (durably), stop taking writes, and return the NBD error for the request."""
        g = self.bitmap.granule
        ranges = [(offset, offset + length)] + [(r * g, (r + 1) * g) for r in self._unsynced_now()]
        ranges = [(a, min(b, self.volume.size)) for a, b in merge(ranges)]
        for a, b in ranges:
            self.bitmap.set_dirty(a, b - a)
        self._persist_bitmap()
        metrics.IO_ERRORS.labels(self.name, op).inc()
        err = exc.errno or 5
        failed_now = self.health.fail(time.monotonic(), op, err, str(exc), ranges)
        self.sync_lane()
        if failed_now:
            metrics.VOLUME_FAILED.labels(self.name).set(1)
            log.error(
                "local I/O error on the protected volume: it refuses writes until its disk works "
                "again; the failed regions are resent to Kafka then",
                volume=self.name,
                op=op,
                offset=offset,
                length=length,
                error=str(exc),
                errno=err,
                hint=f"check the disk under {self.volume.path} (dmesg, free space); the tapper "
                f"probes it every {self.health.interval_s:g}-{self.health.max_interval_s:g} s and "
                "resumes by itself; a RESUME for the group probes at once",
            )
        else:
            log.warning("local I/O error while failed", volume=self.name, op=op, error=str(exc))
        return os_error(exc), f"local {op} failed: {exc}"

    def probe_now(self) -> None:
        if self.health.failed:
            log.info("probing the failed volume at once (RESUME)", volume=self.name)
            self.health.probe_now()

    async def _probe_disk(self) -> None:
        """Re-write the failed ranges' current content and fdatasync: success means the disk
        holds what the volume reads, so a DELTA of those ranges makes the stream equal it again."""
        ranges = self.health.probe_started()
        try:
            await asyncio.to_thread(_rewrite_and_sync, self.volume, ranges)
            ok, error = True, ""
        except Exception as exc:  # any failure keeps the volume failed; never a stuck `probing`
            ok, error = False, repr(exc)
            metrics.IO_ERRORS.labels(self.name, "probe").inc()
        failed_for = time.monotonic() - self.health.since
        resend = self.health.probe_done(time.monotonic(), ok)
        if resend is None:
            self.sync_lane()
            if self.health.failed:
                log.warning(
                    "the protected volume still fails; writes stay refused",
                    volume=self.name,
                    error=error,
                    failed_for_s=round(failed_for, 1),
                    next_probe_in_s=round(self.health.next_probe - time.monotonic(), 1),
                )
            return
        self._unsynced.clear()  # the probe's fdatasync covered every earlier write
        self.stream.take_written()
        for a, b in resend:
            self.bitmap.set_dirty(a, b - a)  # again: an ack in between may have cleared a bit
        await asyncio.to_thread(self.bitmap.sync)
        metrics.VOLUME_FAILED.labels(self.name).set(0)
        self.sync_lane()
        ranges = self.bitmap.dirty_ranges(only_orphans=True)
        log.warning(
            "the protected volume works again: taking writes, resending its dirty regions",
            volume=self.name,
            failed_for_s=round(failed_for, 1),
            regions=len(ranges),
            bytes=sum(b - a for a, b in ranges),
        )
        if ranges and self.stream.healthy:  # else the stream's own recovery resends them
            await self.sync_regions("DELTA", ranges)

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
            seq, lost = continue_after(seq, self.stream.acked_seq)
            failed = self.stream.take_first_failed()
            if failed and (not self._first_failed or failed < self._first_failed):
                self._first_failed = failed
            if not lost and self._first_failed and self._first_failed <= seq:
                try:
                    hole = await asyncio.to_thread(self._hole, self._first_failed, seq)
                except Exception as exc:
                    log.warning(
                        "kafka still unreachable; retrying", volume=self.name, error=repr(exc)
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if hole:
                    log.error(
                        "the stream has a hole: events kafka refused are missing while later ones "
                        "landed; resending the whole volume (its consumers halt at the hole and "
                        "heal on that sync)",
                        volume=self.name,
                        first_missing=min(hole),
                        missing=len(hole),
                        kafka_seq=seq,
                    )
                    metrics.STREAM_HOLES.labels(self.name).inc()
                    self.bitmap.set_dirty(0, self.volume.size)
                    self.bitmap.sync()
            self._first_failed = 0
            if lost:
                log.error(
                    "kafka lost events it had acknowledged: continuing after them and resending "
                    "the whole volume",
                    volume=self.name,
                    acked_seq=self.stream.acked_seq,
                )
                metrics.LOST_UPSTREAM.labels(self.name).inc()
                self.bitmap.set_dirty(0, self.volume.size)
                self.bitmap.sync()
            elif seq != self.stream.seq:
                log.warning(
                    "continuing after the last seq kafka holds",
                    volume=self.name,
                    kafka_seq=seq,
                    allocated_seq=self.stream.seq,
                )
            self.stream.restart_at(seq)
            with self.stream.exclusive():  # the requests that waited go before the compiled path's
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

    def _hole(self, first_failed: int, kafka_seq: int) -> list[int]:
        """The seqs from `first_failed` to `kafka_seq` Kafka does not hold (a refused event after
        which later ones landed); without a way to look, assume the worst."""
        if self._find_seqs_since is None:
            return list(range(first_failed, kafka_seq + 1))
        present = self._find_seqs_since(first_failed)
        return [s for s in range(first_failed, kafka_seq + 1) if s not in present]

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
            except OSError as exc:  # the marks stay in memory; the next sync tries again
                log.error("dirty bitmap not saved", volume=self.name, error=repr(exc))
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
        if self.health.failed:
            return "the protected volume failed a local write or fdatasync"
        if self.mode.ahead:
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
                regions, _ = self.bitmap.mark(pos, n, resend=True)
                done = _block_done(self.bitmap, regions)
                if not stream.publish_block(self.volume, pos, n, done, sync_id, kind == "INITIAL"):
                    self.bitmap.release(regions)  # all zeroes: a blank replica reads them already
                    continue
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
        self.sync_lane()  # a safety net: each change already set it
        self.stream.observe_latencies()
        if self.health.probe_due(now) and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_disk())
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            self.bitmap.sweep(self.bitmap_cool_s)
        metrics.DIRTY_BYTES.labels(self.name).set(self.bitmap.dirty_bytes())

    def save_seq(self) -> None:
        self._seq_file.write(self.stream.acked_seq)

    async def drain(self) -> None:
        """Wait until every request was answered and every event acked or refused."""
        while self.mode.in_flight() or self.ranges.busy or len(self.ranges):
            self.mode.watchdog(time.monotonic())
            await asyncio.sleep(0.01)
        await self.stream.settled()


def _rewrite_and_sync(volume: Volume, ranges: list[Range]) -> None:
    step = 1 << 20
    for a, b in ranges:
        for pos in range(a, b, step):
            n = min(step, b - pos)
            volume.write(pos, volume.read(pos, n))
    volume.sync()


def _block_done(bitmap: DirtyBitmap, regions: range) -> Callable[[bool], None]:
    return lambda ok: bitmap.release(regions) if ok else bitmap.fail(regions)

"""The tapper service: opens the volumes, catches each stream up (initial or delta sync), serves NBD,
and takes part in checkpoints over tapstream.control. `start()`/`stop()` for the runner."""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from pathlib import Path

from tapstream.core.codec import make_codec
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    producer_config,
)
from tapstream.core.logging import get_logger
from tapstream.tapper import metrics, native
from tapstream.tapper.checkpoint import Checkpoints, GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.export import Export
from tapstream.tapper.fencing import Fences
from tapstream.tapper.publish import SeqFile, VolumeStream, continue_after, last_seq, seqs_since
from tapstream.tapper.server import Limits, NbdServer
from tapstream.tapper.settings import TapperSettings, VolumeSpec
from tapstream.tapper.tls import TlsCredentials
from tapstream.tapper.volume import Volume

log = get_logger("tapstream.tapper")
TOPIC_OVERHEAD = 256 * 1024  # record and batch headers above the largest chunk


class Tapper:
    def __init__(self, settings: TapperSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.exports: dict[str, Export] = {}
        self.gates: dict[str, GroupGate] = {}
        self.producer: AsyncProducer | None = None  # sync volumes' events and control records
        self.async_producer: AsyncProducer | None = None  # async volumes' events, if any
        self.native: native.NativeCore | None = None  # the compiled path of sync volumes, if on
        creds = None
        if settings.tapper_tls != "off":
            assert settings.tapper_tls_cert and settings.tapper_tls_key  # settings check both
            creds = TlsCredentials(
                settings.tapper_tls_cert,
                settings.tapper_tls_key,
                settings.tapper_tls_ca,
                settings.tapper_tls_verify_peer,
            )
        self.server = NbdServer(
            self.exports,
            settings.tapper_tls,
            creds,
            settings.tapper_tls_handshake_timeout_s,
            Limits(
                settings.tapper_max_connections_per_export,
                settings.tapper_max_inflight_bytes,
                settings.tapper_negotiation_timeout_s,
            ),
        )
        self.checkpoints: Checkpoints | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        return self.server.port

    def topic(self, group: str) -> str:
        return self.s.topic(f"writes.{group}")

    def _producer_config(self, linger_ms: float) -> dict[str, object]:
        s = self.s
        conf = producer_config(
            s,
            linger_ms=linger_ms,
            compression=s.tapper_compression,
            delivery_timeout_ms=int(s.tapper_publish_timeout_s * 1000),
            max_message_bytes=s.tapper_chunk_bytes + 64 * 1024,
        )
        # Latency, not throughput, bounds sync mode: no Nagle delay on the broker connection.
        conf["socket.nagle.disable"] = True
        return conf

    async def start(self) -> None:
        s = self.s
        if not s.tapper_volumes:
            raise ValueError(
                "no volumes to serve: set TAPSTREAM_TAPPER_VOLUMES (see `tapstream tapper --help`)"
            )
        self.producer = AsyncProducer(self._producer_config(s.tapper_linger_ms))
        await self.producer.start()
        self._start_native()
        if self.native is None and any(spec.mode == "async" for spec in s.tapper_volumes):
            # Async replies never wait for Kafka, so a longer linger costs the VM nothing and
            # batches its events: librdkafka's CPU per event drops several-fold (bench/tapper.py).
            self.async_producer = AsyncProducer(self._producer_config(s.tapper_async_linger_ms))
            await self.async_producer.start()
        groups: dict[str, list[str]] = {}
        for spec in s.tapper_volumes:
            groups.setdefault(spec.group, []).append(spec.name)
        await ensure_topics(
            client_config(s),
            [
                TopicSpec(
                    self.topic(g),
                    partitions=s.tapper_partitions or len(vols),
                    config={
                        "retention.ms": str(s.tapper_retention_hours * 3600 * 1000),
                        "max.message.bytes": str(s.tapper_chunk_bytes + TOPIC_OVERHEAD),
                        "message.timestamp.type": "CreateTime",
                        "cleanup.policy": "delete",
                    },
                )
                for g, vols in groups.items()
            ]
            + [TopicSpec(s.topic("control"), partitions=1)],
        )
        for spec in s.tapper_volumes:
            await self._open_export(spec)
        # The fence before the first writer: a restarted tapper of a fenced group refuses at once.
        fences = Fences(s.tapper_state_dir, self.gates, lambda: self.exports.values())
        fences.load()
        control = await fences.catch_up(s, self.codec)
        if s.tapper_listen_host:
            await self.server.listen_tcp(s.tapper_listen_host, s.tapper_listen_port)
        if s.tapper_unix_socket:
            s.tapper_unix_socket.unlink(missing_ok=True)
            await self.server.listen_unix(
                str(s.tapper_unix_socket), s.tapper_unix_socket_mode, s.tapper_unix_socket_owner
            )
        self.checkpoints = Checkpoints(
            s,
            self.codec,
            self.producer,
            lambda: self.exports.values(),
            self.gates,
            f"tapper@{s.tapper_host_id}",
            s.tapper_hold_timeout_s,
            s.tapper_publish_timeout_s,
            s.tapper_announce_interval_s,
            fences,
        )
        await self.checkpoints.start(control)
        self._housekeeping = asyncio.create_task(self._housekeeping_loop())
        log.info(
            "serving",
            port=self.port,
            unix_socket=str(s.tapper_unix_socket or ""),
            tls=s.tapper_tls,
            exports=[
                {
                    "name": e.name,
                    "group": e.group,
                    "mode": e.spec.mode,
                    "size": e.volume.size,
                    "seq": e.stream.seq,
                }
                for e in self.exports.values()
            ],
        )

    def _start_native(self) -> None:
        s = self.s
        if s.tapper_native == "off":
            return
        if not native.available():
            if s.tapper_native == "on":
                raise RuntimeError(
                    "TAPSTREAM_TAPPER_NATIVE=on but the compiled data path is not built: run "
                    "`make setup` (it needs cargo), or set TAPSTREAM_TAPPER_NATIVE=auto/off"
                )
            log.warning("the compiled data path is not built: every export uses the Python path")
            return
        # the events leave through the compiled path's own producers, same settings as the
        # Python path's (the async volumes' one with its longer linger)
        async_conf = (
            self._producer_config(s.tapper_async_linger_ms)
            if any(spec.mode == "async" for spec in s.tapper_volumes)
            else None
        )
        self.native = native.NativeCore(self._producer_config(s.tapper_linger_ms), async_conf)
        self.native.start()
        self.server.native = self.native
        self.native.attach_server(self.server)

    async def _open_export(self, spec: VolumeSpec) -> None:
        assert self.producer is not None
        s = self.s
        volume = Volume(spec.name, spec.path)
        volume.open()
        topic = self.topic(spec.group)
        find_last_seq = partial(last_seq, client_config(s), topic, spec.name, self.codec)
        seq_file = SeqFile(s.tapper_state_dir / f"{spec.name}.seq.json")
        kafka_seq = await asyncio.to_thread(find_last_seq)
        floor = seq_file.read()
        seq, lost = continue_after(kafka_seq, floor)
        if lost:
            log.error(
                "kafka holds fewer of this volume's events than were acked (a lost broker disk, an "
                "unclean leader election, a recreated topic, retention): continuing the sequence "
                "after the gap and resending the whole volume",
                volume=spec.name,
                kafka_seq=kafka_seq,
                acked_seq=floor,
            )
            metrics.LOST_UPSTREAM.labels(spec.name).inc()
        # an async volume on the compiled path shares its bitmap with the compiled core
        bitmap_class = (
            native.NativeDirtyBitmap
            if self.native is not None and spec.mode == "async"
            else DirtyBitmap
        )
        bitmap = bitmap_class(
            s.tapper_state_dir / f"{spec.name}.dirty",
            volume.size,
            s.tapper_bitmap_granule,
            max(s.tapper_bitmap_extent, s.tapper_bitmap_granule),
            s.tapper_bitmap_ahead,
        )
        gate = self.gates.setdefault(spec.group, GroupGate())
        export = Export(
            spec,
            volume,
            bitmap,
            gate,
            s.tapper_publish_timeout_s,
            find_last_seq,
            seq_file,
            find_seqs_since=partial(seqs_since, client_config(s), topic, spec.name, self.codec),
            bitmap_cool_s=s.tapper_bitmap_cool_s if spec.mode == "async" else 0.0,
            backlog_bytes=s.tapper_async_backlog_bytes,
            inline_zero_bytes=s.tapper_inline_zero_bytes,
        )
        stream: VolumeStream | native.NativeVolumeStream
        if self.native is not None:
            stream = native.NativeVolumeStream(
                self.native,
                spec.name,
                spec.group,
                topic,
                s.tapper_host_id,
                self.codec,
                seq,
                s.tapper_chunk_bytes,
                spec.mode,
                export.stream_failed,
                fd=volume.fd,
                size=volume.size,
                granule=bitmap.granule,
                timeout_s=s.tapper_publish_timeout_s,
                bitmap=bitmap if isinstance(bitmap, native.NativeDirtyBitmap) else None,
                backlog_bytes=export.backlog_bytes,
            )
            gate.streams.append(stream)
        else:
            stream = VolumeStream(
                spec.name,
                spec.group,
                topic,
                s.tapper_host_id,
                self.async_producer
                if spec.mode == "async" and self.async_producer
                else self.producer,
                self.codec,
                seq,
                s.tapper_chunk_bytes,
                spec.mode,
                export.stream_failed,
            )
        export.attach(stream)  # type: ignore[arg-type]
        self.exports[spec.name] = export
        metrics.STREAM_HEALTHY.labels(spec.name).set(1)

        # A def, not a lambda, so mypy sees a zero-argument callable (the stream bound by default).
        def current_seq(st: VolumeStream = export.stream) -> float:
            return st.seq

        metrics.SEQ.labels(spec.name).set_function(current_seq)

        def rpo(ex: Export = export) -> float:
            return ex.mode.rpo_s(time.perf_counter())

        metrics.RPO.labels(spec.name).set_function(rpo)

        def backlog(ex: Export = export) -> float:
            # while ahead: also the regions still to resend (not every set bit: hot regions stay
            # set for TAPSTREAM_TAPPER_BITMAP_COOL_S after their events were acked)
            ahead = len(ex.bitmap.orphans()) * ex.bitmap.granule if ex.mode.ahead else 0
            return ex.stream.outstanding_bytes + ahead

        metrics.BACKLOG.labels(spec.name).set_function(backlog)
        if lost:
            everything = [(0, volume.size)] if volume.size else []
            for a, b in everything:
                bitmap.set_dirty(a, b - a)
            bitmap.sync()
            await export.sync_regions("DELTA", everything)
        elif kafka_seq == 0 and spec.initial_sync:
            # Nothing of this volume in the stream: whatever it already holds goes out as an INITIAL sync.
            # Marked dirty (durably) first, so a crash mid-sync continues as a DELTA.
            extents = volume.data_extents(bitmap.granule)
            if extents:
                for a, b in extents:
                    bitmap.set_dirty(a, b - a)
                bitmap.sync()
                log.info(
                    "initial sync of a volume that already holds data",
                    volume=spec.name,
                    bytes=sum(b - a for a, b in extents),
                )
                await export.sync_regions("INITIAL", extents)
        else:
            dirty = bitmap.dirty_ranges()
            if dirty:
                log.warning(
                    "dirty regions left by an unclean stop or a Kafka failure: delta sync",
                    volume=spec.name,
                    regions=len(dirty),
                    bytes=sum(b - a for a, b in dirty),
                )
                await export.sync_regions("DELTA", dirty)
        bitmap.sweep()
        bitmap.sync()
        export.save_seq()
        metrics.DIRTY_BYTES.labels(spec.name).set(bitmap.dirty_bytes())

    async def _housekeeping_loop(self) -> None:
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for export in self.exports.values():
                export.housekeeping(now)
            if self.native is not None:
                self.native.housekeeping()
            if now - last_save > 5:
                last_save = now
                for export in self.exports.values():
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(export.save_seq)

    # --- checkpoints -----------------------------------------------------------------------------
    async def checkpoint(
        self, group: str, checkpoint_id: str | None = None, tag: str | None = None
    ) -> str:
        """Hold completions, write the marker on every volume of `group` served here, release."""
        assert self.checkpoints is not None, "start() first"
        return await self.checkpoints.local(group, checkpoint_id, tag)

    # --- shutdown --------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, flush every event, close the volumes."""
        t0 = time.monotonic()
        if self.checkpoints is not None:
            await self.checkpoints.stop()
        await self.server.stop()
        for export in self.exports.values():
            try:
                await asyncio.wait_for(export.drain(), self.s.tapper_publish_timeout_s + 5)
            except TimeoutError:
                log.error(
                    "events still unacked at shutdown; their regions stay dirty for the next start",
                    volume=export.name,
                )
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self.native is not None:
            left = await self.native.stop(self.s.tapper_publish_timeout_s)
            if left:
                log.error("events of the compiled path still unacked at shutdown", count=left)
        for producer in (self.async_producer, self.producer):
            if producer is not None:
                await producer.stop()
        for export in self.exports.values():
            export.volume.sync()
            export.volume.close()
            export.bitmap.sweep()
            export.bitmap.close()
            export.save_seq()
        if self.s.tapper_unix_socket:
            await asyncio.to_thread(Path(self.s.tapper_unix_socket).unlink, missing_ok=True)
        log.info("stopped cleanly", seconds=round(time.monotonic() - t0, 3))

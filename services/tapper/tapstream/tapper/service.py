"""The tapper service: opens the volumes, catches each stream up (initial or delta sync), serves
NBD, and takes part in checkpoints over tapstream.control."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

from tapstream.core.codec import DecodeError, make_codec
from tapstream.core.kafka import AsyncProducer, TopicSpec, client_config, ensure_topics, make_consumer, producer_config
from tapstream.core.logging import get_logger
from tapstream.tapper import metrics
from tapstream.tapper.checkpoint_gate import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.export import Export
from tapstream.tapper.publish import VolumeStream, last_seq, now_us
from tapstream.tapper.server import MAX_PAYLOAD, serve_connection
from tapstream.tapper.settings import TapperSettings
from tapstream.tapper.volume import Volume

log = get_logger("tapstream.tapper")


class Tapper:
    def __init__(self, settings: TapperSettings) -> None:
        self.s = settings
        self.codec = make_codec(settings)
        self.exports: dict[str, Export] = {}
        self.gates: dict[str, GroupGate] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.producer: AsyncProducer | None = None
        self.port: int | None = None
        self._control: asyncio.Task[None] | None = None
        self._announce: asyncio.Task[None] | None = None
        self._hold_timers: dict[str, asyncio.TimerHandle] = {}
        self._connections: set[asyncio.Task[None]] = set()

    def topic(self, group: str) -> str:
        return self.s.topic(f"writes.{group}")

    async def start(self) -> None:
        if not self.s.tapper_volumes:
            raise ValueError("no volumes to serve: set TAPSTREAM_TAPPER_VOLUMES (see README)")
        conf = producer_config(self.s, linger_ms=self.s.tapper_linger_ms, compression=self.s.tapper_compression,
                               delivery_timeout_ms=int(self.s.tapper_publish_timeout_s * 1000),
                               max_message_bytes=self.s.tapper_chunk_bytes + 64 * 1024)
        self.producer = AsyncProducer(conf)
        await self.producer.start()
        groups: dict[str, list[str]] = {}
        for spec in self.s.tapper_volumes:
            groups.setdefault(spec.group, []).append(spec.name)
        await ensure_topics(client_config(self.s), [
            TopicSpec(self.topic(g), partitions=self.s.tapper_partitions or len(vols), config={
                "retention.ms": str(self.s.tapper_retention_hours * 3600 * 1000),
                "max.message.bytes": str(self.s.tapper_chunk_bytes + 256 * 1024),
                "message.timestamp.type": "CreateTime",
                "min.insync.replicas": "1",
            }) for g, vols in groups.items()
        ] + [TopicSpec(self.s.topic("control"), partitions=1)])
        for spec in self.s.tapper_volumes:
            await self._open_export(spec)
        exports = self.exports
        if self.s.tapper_listen_host:
            server = await asyncio.start_server(self._client(exports), self.s.tapper_listen_host, self.s.tapper_listen_port,
                                                limit=MAX_PAYLOAD + 1024)
            self.port = server.sockets[0].getsockname()[1]
            self.servers.append(server)
        if self.s.tapper_unix_socket:
            self.s.tapper_unix_socket.unlink(missing_ok=True)
            self.servers.append(await asyncio.start_unix_server(self._client(exports), str(self.s.tapper_unix_socket),
                                                                limit=MAX_PAYLOAD + 1024))
        self._control = asyncio.create_task(self._control_loop())
        log.info("serving", port=self.port, unix_socket=str(self.s.tapper_unix_socket or ""),
                 exports=[{"name": e.name, "group": e.spec.group, "mode": e.spec.mode, "size": e.volume.size,
                           "seq": e.stream.seq} for e in exports.values()])

    def _client(self, exports: dict[str, Export]):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                await serve_connection(reader, writer, exports)
            finally:
                self._connections.discard(task)
        return handle

    async def _open_export(self, spec) -> None:  # type: ignore[no-untyped-def]
        assert self.producer is not None
        volume = Volume(spec.name, spec.path)
        volume.open()
        topic = self.topic(spec.group)
        seq = await asyncio.to_thread(last_seq, client_config(self.s), topic, spec.name, self.codec)
        stream = VolumeStream(spec.name, spec.group, topic, self.s.tapper_host_id, self.producer, self.codec,
                              seq, self.s.tapper_chunk_bytes)
        gate = self.gates.setdefault(spec.group, GroupGate())
        bitmap = None
        if spec.mode == "async":
            bitmap = DirtyBitmap(self.s.tapper_state_dir / f"{spec.name}.dirty", volume.size, self.s.tapper_bitmap_granule)
        export = Export(spec, volume, stream, gate, bitmap, self.s.tapper_publish_timeout_s)
        self.exports[spec.name] = export
        granule = self.s.tapper_bitmap_granule
        if seq == 0:
            extents = volume.data_extents(granule)
            if extents:
                log.info("initial sync of a volume that already holds data", volume=spec.name,
                         bytes=sum(b - a for a, b in extents))
                await export.sync_regions("INITIAL", extents, granule)
        if bitmap is not None:
            dirty = bitmap.dirty()
            if dirty and seq > 0:
                log.warning("dirty regions left by an unclean stop: delta sync", volume=spec.name,
                            regions=len(dirty), bytes=len(dirty) * granule)
                regions = _coalesce(dirty, granule, volume.size)
                await export.sync_regions("DELTA", regions, granule)
            for r in dirty:
                bitmap.clear(r)
            bitmap.sync()
            metrics.DIRTY_BYTES.labels(spec.name).set(bitmap.dirty_bytes())
        metrics.SEQ.labels(spec.name).set_function(lambda s=stream: s.seq)

    # --- checkpoints -----------------------------------------------------------------------------
    async def checkpoint(self, group: str, checkpoint_id: str | None = None, tag: str | None = None) -> str:
        """Hold completions, write the marker on every volume of `group` served here, release."""
        checkpoint_id = checkpoint_id or str(uuid.uuid4())
        gate = self.gates[group]
        if not gate.hold(checkpoint_id):
            raise RuntimeError(f"checkpoint {gate.holder} is in progress for group {group}")
        try:
            await self._write_markers(group, checkpoint_id, tag, now_us())
        finally:
            gate.release(checkpoint_id)
        return checkpoint_id

    async def _write_markers(self, group: str, checkpoint_id: str, tag: str | None, ts: int) -> None:
        exports = [e for e in self.exports.values() if e.spec.group == group]
        volumes = sorted(e.name for e in exports)
        futures = [e.mark_checkpoint(checkpoint_id, ts, tag, volumes) for e in exports]
        try:
            await asyncio.wait_for(asyncio.gather(*futures), self.s.tapper_publish_timeout_s)
            metrics.CHECKPOINTS.labels(group, "ok").inc()
        except Exception:
            metrics.CHECKPOINTS.labels(group, "failed").inc()
            raise

    async def _control_loop(self) -> None:
        """Answer the checkpoint coordinator (PREPARE -> hold + PREPARED, COMMIT -> markers + release)."""
        control = self.s.topic("control")
        consumer = make_consumer(self.s, control, group_id=None, auto_offset_reset="latest",
                                 isolation_level="read_uncommitted")
        await consumer.start()
        self._announce = asyncio.create_task(self._announce_loop())
        try:
            async for msg in consumer:
                try:
                    _, cmd = self.codec.decode(msg.value)
                except DecodeError:
                    continue
                await self._on_command(cmd)
        finally:
            await consumer.stop()

    async def _on_command(self, cmd: dict) -> None:
        group, kind, cp = cmd["group"], cmd["kind"], cmd.get("checkpoint_id")
        gate = self.gates.get(group)
        if gate is None or cp is None:
            return
        if kind == "CHECKPOINT_PREPARE":
            if gate.hold(cp):
                loop = asyncio.get_running_loop()
                self._hold_timers[cp] = loop.call_later(self.s.tapper_hold_timeout_s, self._hold_expired, group, cp)
                await self._send("CHECKPOINT_PREPARED", group, cp, cmd.get("tag"))
        elif kind == "CHECKPOINT_COMMIT" and gate.holder == cp:
            try:
                await self._write_markers(group, cp, cmd.get("tag"), int(cmd["args"].get("cut_ts", now_us())))
            finally:
                self._release(group, cp)
        elif kind == "CHECKPOINT_ABORT":
            self._release(group, cp)

    def _hold_expired(self, group: str, cp: str) -> None:
        log.warning("checkpoint hold timed out; releasing completions without a marker", group=group, checkpoint=cp)
        metrics.CHECKPOINTS.labels(group, "timeout").inc()
        self._release(group, cp)

    def _release(self, group: str, cp: str) -> None:
        timer = self._hold_timers.pop(cp, None)
        if timer:
            timer.cancel()
        self.gates[group].release(cp)

    async def _send(self, kind: str, group: str, cp: str | None = None, tag: str | None = None) -> None:
        assert self.producer is not None
        volumes = sorted(e.name for e in self.exports.values() if e.spec.group == group)
        value = self.codec.encode("Command", {
            "id": str(uuid.uuid4()), "group": group, "kind": kind, "sender": f"tapper@{self.s.tapper_host_id}",
            "ts": now_us(), "checkpoint_id": cp, "tag": tag, "volumes": volumes, "args": {}})
        await self.producer.produce(self.s.topic("control"), value, key=group.encode())

    async def _announce_loop(self) -> None:
        while True:
            for group in self.gates:
                with contextlib.suppress(Exception):
                    await self._send("ANNOUNCE", group)
            await asyncio.sleep(self.s.tapper_announce_interval_s)

    # --- shutdown --------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, flush every event, close the volumes."""
        t0 = time.monotonic()
        for server in self.servers:
            server.close()
        for task in (self._announce, self._control):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for gate in self.gates.values():
            gate.release()
        if self._connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*self._connections, return_exceptions=True), 30)
        for export in self.exports.values():
            await export.drain()
        if self.producer is not None:
            await self.producer.stop()
        for export in self.exports.values():
            export.volume.sync()
            export.volume.close()
            if export.bitmap is not None:
                export.bitmap.close()
        if self.s.tapper_unix_socket:
            Path(self.s.tapper_unix_socket).unlink(missing_ok=True)
        log.info("stopped cleanly", seconds=round(time.monotonic() - t0, 3))


def _coalesce(regions: list[int], granule: int, size: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for r in sorted(regions):
        a, b = r * granule, min(size, (r + 1) * granule)
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out

"""Reverse replication at the original site: applies the recovery site's write stream (mirrored here
as `<recovery alias>.tapstream.writes.<group>`) to the original volumes, which survived.

Only what changed at the recovery site travels (its tapper starts without an initial sync, the
promoted volume being the checkpoint the original already holds); every region applied is marked in
the original tapper's dirty bitmap, so when the group fails back its tapper sends exactly those
regions forward again as a DELTA sync and the recovery replica converges without a full copy.

Each volume's events pass the stream contract (core.contract), as at the VDSA's applier (apply.py),
with which it shares the reading of keys and poison (stream.py): a gap, a bad checksum or an
undecodable record of a volume halts that volume at its last good event (status() says why; the
other volumes go on), until a sync of the whole volume from the recovery site heals it. The site
manager runs it at the original site while a group is failed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from tapstream.core.codec import make_codec
from tapstream.core.contract import Cursor, Halt
from tapstream.core.dlq import classify
from tapstream.core.durable import atomic_write_json
from tapstream.core.kafka import assign_at, make_consumer, wait_for_partitions
from tapstream.core.logging import get_logger
from tapstream.core.replay import apply_body
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.vdsa.stream import undecodable, volume_key

log = get_logger("tapstream.vdsa.reverse")


@dataclass
class _Vol:
    path: Path
    fd: int
    bitmap: DirtyBitmap
    cursor: Cursor
    checkpoints: list[str] = field(default_factory=list)
    changed_bytes: int = 0


class ReverseApplier:
    def __init__(
        self,
        settings: TapstreamSettings,
        group: str,
        volumes: dict[str, Path],
        state_file: Path,
        bitmap_dir: Path,
        granule: int,
    ) -> None:
        self.s = settings
        self.group = group
        self.topic = settings.mirrored(settings.topic(f"writes.{group}"), source="recovery")
        self.volume_paths = volumes
        self.state_file = state_file
        self.bitmap_dir = bitmap_dir
        self.granule = granule
        self.codec = make_codec(settings)
        self.vols: dict[str, _Vol] = {}
        self.offsets: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def start(self) -> None:
        saved: dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )
        self.offsets = {int(p): o for p, o in saved.get("offsets", {}).items()}
        for name, path in self.volume_paths.items():
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            size = os.fstat(fd).st_size
            v = saved.get("volumes", {}).get(name, {})
            self.vols[name] = _Vol(
                path,
                fd,
                DirtyBitmap(self.bitmap_dir / f"{name}.dirty", size, self.granule),
                Cursor.from_json(name, v),
                v.get("checkpoints", []),
                v.get("changed_bytes", 0),
            )
        self._task = asyncio.create_task(self._run())

    def seen(self, checkpoint_id: str) -> bool:
        """Every volume applied up to and including this checkpoint's marker."""
        return all(checkpoint_id in v.checkpoints for v in self.vols.values())

    def status(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "error": repr(self.error) if self.error else None,
            "volumes": {
                n: {
                    "seq": v.cursor.seq,
                    "changed_bytes": v.changed_bytes,
                    "halted": v.cursor.halt,
                }
                for n, v in self.vols.items()
            },
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for v in self.vols.values():
            os.fsync(v.fd)
            os.close(v.fd)
            v.bitmap.close()
        self.vols.clear()

    async def _run(self) -> None:
        consumer = make_consumer(self.s, group_id=None, metadata_max_age_ms=2000)
        await consumer.start()
        try:
            # MirrorMaker 2 creates it with the recovery tapper's first write.
            tps = await wait_for_partitions(consumer, self.topic, interval_s=0.5)
            await assign_at(consumer, tps, self.offsets)
            while True:
                batch = await consumer.getmany(timeout_ms=300, max_records=500)
                if batch:
                    await asyncio.to_thread(self._apply, batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
            log.error("reverse replication stopped", group=self.group, error=repr(exc))
            raise
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        touched: set[str] = set()
        for tp, msgs in batch.items():
            for msg in msgs:
                self.offsets[tp.partition] = msg.offset + 1
                rec, poison = classify(msg.value, self.codec, "DiskEvent")
                key = volume_key(msg.key)
                if rec is None:
                    assert poison is not None
                    log.error(
                        "poison record in the reverse stream",
                        topic=tp.topic,
                        offset=msg.offset,
                        reason=poison.reason,
                        error=poison.error,
                    )
                    if poison.reason == "undecodable" and key in self.vols:
                        hit = self.vols[key]
                        self._halt(
                            hit, undecodable(tp.topic, tp.partition, msg.offset, poison, hit.cursor)
                        )
                        touched.add(key)
                    continue
                v = self.vols.get(rec["volume"])
                if v is None:
                    continue
                try:
                    verdict = v.cursor.check(rec)
                except Halt as halt:
                    self._halt(v, halt)
                    touched.add(rec["volume"])
                    continue
                if verdict in ("duplicate", "halted"):
                    continue
                branch, body = rec["body"]
                apply_body(v.fd, rec["body"], verify=False)
                if branch in ("Write", "SyncBlock", "Zero"):
                    v.bitmap.set_dirty(body["offset"], body["length"])
                    v.changed_bytes += body["length"]
                elif branch == "Checkpoint":
                    v.checkpoints = [*v.checkpoints, body["id"]][-200:]
                v.cursor.advance(rec)
                if verdict == "heal":
                    log.warning("reverse stream healed by a full sync", volume=rec["volume"])
                    if isinstance(self.error, Halt) and not any(
                        o.cursor.halt for o in self.vols.values()
                    ):
                        self.error = None
                touched.add(rec["volume"])
        # Data, then the bitmap that lets it travel forward later, then the position that skips it.
        for name in touched:
            os.fdatasync(self.vols[name].fd)
            self.vols[name].bitmap.sync()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.state_file,
            {
                "offsets": self.offsets,
                "volumes": {
                    n: {
                        **v.cursor.to_json(),
                        "checkpoints": v.checkpoints,
                        "changed_bytes": v.changed_bytes,
                    }
                    for n, v in self.vols.items()
                },
            },
        )

    def _halt(self, v: _Vol, halt: Halt) -> None:
        if v.cursor.halt is not None:
            return
        v.cursor.stop(halt)
        self.error = halt
        log.error(
            "reverse replication halted for a volume: the original stays at its last good event",
            group=self.group,
            volume=v.cursor.volume,
            reason=halt.reason,
            detail=halt.detail,
            heal="resync the volume from the recovery site (RESYNC all)",
        )

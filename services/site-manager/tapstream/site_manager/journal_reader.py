"""The recovery site's reads of the journal index: its checkpoints, one id for a reference, and
whether a checkpoint and every event before it are indexed. One connection pool for the life of
the site manager, opened at the first read (a site that never reads the journal opens none)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tapstream.journal.store import JournalStore
from tapstream.site_manager.errors import OperationFailed


class JournalReader:
    def __init__(self, database_url: str) -> None:
        self._store = JournalStore(database_url)
        self._started = False
        self._lock = asyncio.Lock()

    async def _open(self) -> JournalStore:
        async with self._lock:
            if not self._started:
                await self._store.start()
                self._started = True
        return self._store

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._store.stop()

    async def checkpoints(self, group: str) -> list[dict[str, Any]]:
        store = await self._open()
        return [{k: v for k, v in r.items() if k != "cut"} for r in await store.checkpoints(group)]

    async def resolve(self, group: str, volumes: list[str], ref: str) -> str:
        """One checkpoint id for every volume (a per-volume `latest` could differ between volumes)."""
        store = await self._open()
        ids = None
        for v in sorted(volumes):
            cp = await store.find_checkpoint(group, v, ref)
            if cp is None:
                raise OperationFailed(
                    f"no checkpoint {ref!r} of {group}/{v} in the journal; list them with "
                    f"`tapstream checkpoint list {group}`"
                )
            ids = cp["id"] if ids is None else ids
        if ref == "latest":
            # The newest checkpoint every volume has.
            rows = await store.checkpoints(group)
            full = [r for r in rows if set(r["volumes"]) >= set(volumes)]
            if not full:
                raise OperationFailed(f"no checkpoint of {group} covers all its volumes yet")
            ids = full[-1]["id"]
        assert ids is not None
        return ids

    async def indexed(
        self, group: str, volumes: list[str], cp: str, applied: Callable[[str], int]
    ) -> tuple[list[str], bool]:
        """The volumes whose checkpoint `cp` is indexed, and whether all have it and every event
        between their replica's position (`applied(volume)`, read just before) and it."""
        store = await self._open()
        vols = sorted(volumes)
        have = [v for v in vols if await store.find_checkpoint(group, v, cp) is not None]
        if len(have) != len(vols):
            return have, False
        complete = True
        for v in vols:
            row = await store.find_checkpoint(group, v, cp)
            assert row is not None
            pos = applied(v)
            got = await store.events_between(group, v, pos, row["seq"])
            complete &= len(got) >= row["seq"] - pos
        return have, complete

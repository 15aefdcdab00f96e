"""The journal index in PostgreSQL (asyncpg). Rows and Kafka offsets commit in one transaction, so
the index holds each event exactly once however often the consumer restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from tapstream.core.keep import TagRequest
from tapstream.journal.rows import CheckpointRow, EventRow

SCHEMA = (Path(__file__).parent / "schema.sql").read_text()


class StaleOffsets(Exception):
    """Another journal process moved these partitions' stored offsets: it indexes them now."""

    def __init__(self, parts: set[tuple[str, int]]) -> None:
        super().__init__(sorted(parts))
        self.parts = parts


class JournalStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, timeout=15)
        async with self.pool.acquire() as conn:
            await conn.execute(SCHEMA)

    async def stop(self) -> None:
        if self.pool:
            await self.pool.close()

    async def offsets(self, topic: str) -> dict[int, int]:
        assert self.pool
        rows = await self.pool.fetch(
            "select kpartition, next_offset from journal_offsets where topic=$1", topic
        )
        return {r["kpartition"]: r["next_offset"] for r in rows}

    async def write(
        self,
        events: list[EventRow],
        checkpoints: list[CheckpointRow],
        offsets: dict[tuple[str, int], int],
        expect: dict[tuple[str, int], int | None] | None = None,
    ) -> None:
        """Bulk COPY into staging tables, merge (MirrorMaker 2 may deliver a record twice), store offsets.

        With `expect` (journal processes sharing partitions), the stored offsets of `offsets`'
        partitions must still be those (None: no row): else nothing is written and StaleOffsets
        names the partitions another process moved."""
        assert self.pool
        async with self.pool.acquire() as conn, conn.transaction():
            if expect is not None:
                moved = await self._claim(conn, offsets, expect)
                if moved:
                    raise StaleOffsets(moved)
            await conn.execute(
                "create temp table if not exists stage_events (like journal_events) on commit delete rows"
            )
            await conn.copy_records_to_table(
                "stage_events", records=events, columns=list(EventRow._fields)
            )
            await conn.execute(
                "insert into journal_events select * from stage_events on conflict do nothing"
            )
            if checkpoints:
                await conn.executemany(
                    "insert into journal_checkpoints values ($1,$2,$3,$4,$5,$6,$7,$8) on conflict do nothing",
                    checkpoints,
                )
            if expect is None:
                await conn.executemany(
                    "insert into journal_offsets values ($1,$2,$3) on conflict (topic, kpartition) "
                    "do update set next_offset = excluded.next_offset",
                    [(t, p, o) for (t, p), o in offsets.items()],
                )

    @staticmethod
    async def _claim(
        conn: asyncpg.Connection,
        offsets: dict[tuple[str, int], int],
        expect: dict[tuple[str, int], int | None],
    ) -> set[tuple[str, int]]:
        """Move each partition's stored offset from its expected value to the new one, first in the
        transaction: the row lock makes a concurrent writer of the same partition wait, then find
        the offset moved. Returns the partitions that were not where expected."""
        done: set[tuple[str, int]] = set()
        fresh = [(t, p, o) for (t, p), o in offsets.items() if expect.get((t, p)) is None]
        known = [
            (t, p, o, expect[(t, p)])
            for (t, p), o in offsets.items()
            if expect.get((t, p)) is not None
        ]
        for t, p, o in fresh:
            if (
                await conn.fetchval(
                    "insert into journal_offsets values ($1,$2,$3) on conflict do nothing "
                    "returning kpartition",
                    t,
                    p,
                    o,
                )
                is not None
            ):
                done.add((t, p))
        for t, p, o, e in known:
            if (
                await conn.fetchval(
                    "update journal_offsets set next_offset=$3 where topic=$1 and kpartition=$2 "
                    "and next_offset=$4 returning kpartition",
                    t,
                    p,
                    o,
                    e,
                )
                is not None
            ):
                done.add((t, p))
        return set(offsets) - done

    async def set_applied(self, group: str, volume: str, seq: int) -> None:
        assert self.pool
        await self.pool.execute(
            "insert into journal_applied values ($1,$2,$3) on conflict (group_name, volume) "
            "do update set seq = greatest(journal_applied.seq, excluded.seq)",
            group,
            volume,
            seq,
        )

    async def tag(self, requests: list[TagRequest]) -> None:
        """Record CHECKPOINT_TAG requests, in order; idempotent (the control topic is re-read at every
        start) and the later ts wins, so a redelivered older command never undoes a newer one."""
        assert self.pool
        async with self.pool.acquire() as conn, conn.transaction():
            for r in requests:
                if r.tag is None:  # release every tag of the checkpoint
                    await conn.execute(
                        "update journal_checkpoint_tags set keep=false, ts=$3 "
                        "where group_name=$1 and id=$2 and ts <= $3",
                        r.group,
                        r.checkpoint_id,
                        r.ts,
                    )
                    continue
                await conn.execute(
                    """insert into journal_checkpoint_tags as t values ($1,$2,$3,$4,$5,$6,$7)
                       on conflict (group_name, id, tag) do update set keep=excluded.keep, ts=excluded.ts,
                           reason=case when excluded.keep then excluded.reason else t.reason end,
                           sender=case when excluded.keep then excluded.sender else t.sender end
                       where excluded.ts >= t.ts""",
                    r.group,
                    r.checkpoint_id,
                    r.tag,
                    r.keep,
                    r.reason,
                    r.sender,
                    r.ts,
                )

    async def trim(self, group: str) -> int:
        """Drop index rows the replica already holds (they can never be needed by a restore).

        Kept checkpoints need no exception: the recovery VDSA holds the replica at a kept checkpoint's
        marker, so every event after it stays beyond the applied seq, and the checkpoint itself is then
        the replica's content (a restore needs no journal event)."""
        assert self.pool
        status = await self.pool.execute(
            "delete from journal_events e using journal_applied a where e.group_name=$1 and "
            "a.group_name=e.group_name and a.volume=e.volume and e.seq <= a.seq",
            group,
        )
        return int(status.split()[-1])

    async def reset(self, topic: str, group: str) -> None:
        """Forget everything indexed from `topic` (a rebuild reads it again from the start)."""
        assert self.pool
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("delete from journal_events where group_name=$1", group)
            await conn.execute("delete from journal_checkpoints where group_name=$1", group)
            await conn.execute("delete from journal_checkpoint_tags where group_name=$1", group)
            await conn.execute("delete from journal_offsets where topic=$1", topic)

    # --- queries ---------------------------------------------------------------------------------
    async def checkpoints(self, group: str) -> list[dict[str, Any]]:
        """Oldest first; `tag` is the checkpoint's own, `tags` those asked for later, `kept` whether any
        of those is kept."""
        assert self.pool
        rows = await self.pool.fetch(
            """select c.id, c.tag, c.ts, array_agg(c.volume order by c.volume) as volumes,
                      bool_and(c.seq >= coalesce(a.seq, 0)) as restorable,
                      max(c.volumes::text) as cut,
                      coalesce((select array_agg(t.tag order by t.ts) from journal_checkpoint_tags t
                                where t.group_name=c.group_name and t.id=c.id), '{}') as tags,
                      coalesce((select bool_or(t.keep) from journal_checkpoint_tags t
                                where t.group_name=c.group_name and t.id=c.id), false) as kept
               from journal_checkpoints c
               left join journal_applied a on a.group_name=c.group_name and a.volume=c.volume
               where c.group_name=$1 group by c.group_name, c.id, c.tag, c.ts order by c.ts""",
            group,
        )
        return [dict(r) for r in rows]

    async def checkpoint_tags(self, group: str, checkpoint_id: str) -> list[dict[str, Any]]:
        assert self.pool
        rows = await self.pool.fetch(
            "select tag, keep, reason, sender, ts from journal_checkpoint_tags where group_name=$1 and id=$2 "
            "order by ts",
            group,
            checkpoint_id,
        )
        return [dict(r) for r in rows]

    async def resolve(self, group: str, ref: str) -> str | None:
        """The id of the checkpoint `ref` (id, own tag, asked-for tag, or latest) names in `group`."""
        volumes = await self.volumes(group)
        rows = [await self.find_checkpoint(group, v, ref) for v in volumes]
        found = sorted((r for r in rows if r), key=lambda r: r["ts"])
        return found[-1]["id"] if found else None

    async def find_checkpoint(self, group: str, volume: str, ref: str) -> dict[str, Any] | None:
        """`ref` is an id, a tag (the checkpoint's own or one asked for later; newest checkpoint with
        that tag) or `latest`."""
        assert self.pool
        base = "select * from journal_checkpoints c where group_name=$1 and volume=$2"
        if ref == "latest":
            row = await self.pool.fetchrow(base + " order by ts desc limit 1", group, volume)
        else:
            row = await self.pool.fetchrow(
                base + " and id=$3", group, volume, ref
            ) or await self.pool.fetchrow(
                base + " and (tag=$3 or exists (select 1 from journal_checkpoint_tags t where "
                "t.group_name=c.group_name and t.id=c.id and t.tag=$3)) order by ts desc limit 1",
                group,
                volume,
                ref,
            )
        return dict(row) if row else None

    async def volumes(self, group: str) -> list[str]:
        assert self.pool
        rows = await self.pool.fetch(
            "select distinct volume from journal_checkpoints where group_name=$1", group
        )
        return sorted(r["volume"] for r in rows)

    async def events_between(
        self, group: str, volume: str, after_seq: int, upto_seq: int
    ) -> list[asyncpg.Record]:
        assert self.pool
        return await self.pool.fetch(
            "select seq, kind, off, len, topic, kpartition, koffset from journal_events "
            "where group_name=$1 and volume=$2 and seq > $3 and seq <= $4 order by seq",
            group,
            volume,
            after_seq,
            upto_seq,
        )

    async def stats(self, group: str) -> dict[str, Any]:
        assert self.pool
        row = await self.pool.fetchrow(
            "select count(*) as events, min(ts) as oldest_ts, max(ts) as newest_ts from journal_events "
            "where group_name=$1",
            group,
        )
        return dict(row) if row else {}

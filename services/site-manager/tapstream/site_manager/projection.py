"""The site manager's Postgres projection (asyncpg): every accepted event, each aggregate's state,
conflicts kept aside, and the Kafka offsets read so far, written in one transaction per batch.
It can be dropped and rebuilt from tapstream.events at any time (`TAPSTREAM_SITE_MANAGER_REBUILD`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import asyncpg

from tapstream.site_manager.domain import Ledger, Recorded
from tapstream.site_manager.domain.events import to_payload

SCHEMA = """
create table if not exists sm_events (
    id text primary key, aggregate_type text not null, aggregate_id text not null, version bigint not null,
    type text not null, ts bigint not null, site text not null, payload jsonb not null,
    unique (aggregate_type, aggregate_id, version));
create table if not exists sm_aggregates (
    aggregate_type text not null, aggregate_id text not null, version bigint not null, state jsonb not null,
    primary key (aggregate_type, aggregate_id));
create table if not exists sm_conflicts (
    id text primary key, aggregate_type text not null, aggregate_id text not null, version bigint not null,
    type text not null, ts bigint not null, site text not null, payload jsonb not null);
create table if not exists sm_waiting (
    id text primary key, aggregate_type text not null, aggregate_id text not null, version bigint not null,
    type text not null, ts bigint not null, site text not null, payload jsonb not null);
alter table sm_events add column if not exists prev text not null default '';
alter table sm_conflicts add column if not exists prev text not null default '';
alter table sm_waiting add column if not exists prev text not null default '';
alter table sm_events add column if not exists actor text;
alter table sm_conflicts add column if not exists actor text;
alter table sm_waiting add column if not exists actor text;
create table if not exists sm_offsets (topic text not null, kpartition int not null, next_offset bigint not null,
    primary key (topic, kpartition));
"""
TABLES = ("sm_events", "sm_aggregates", "sm_conflicts", "sm_waiting", "sm_offsets")


class Projection:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None

    async def start(self, rebuild: bool = False) -> None:
        self.pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=4, timeout=15, init=_json_codec
        )
        async with self.pool.acquire() as conn:
            if rebuild:
                await conn.execute("drop table if exists " + ", ".join(TABLES))
            await conn.execute(SCHEMA)

    async def stop(self) -> None:
        if self.pool:
            await self.pool.close()

    async def load(self, ledger: Ledger) -> None:
        """Fill the ledger from the stored events (then the topics continue from the stored offsets)."""
        assert self.pool
        # Events read before their predecessor (kept in sm_waiting, as the offsets moved past them) last.
        for table in ("sm_events", "sm_waiting"):
            for r in await self.pool.fetch(
                f"select * from {table} order by aggregate_type, aggregate_id, version"
            ):
                ledger.accept(
                    Recorded.from_record(
                        {
                            **dict(r),
                            "payload_json": json.dumps(r["payload"]),
                            "meta": {"prev": r["prev"]},
                        }
                    )
                )

    async def save(
        self,
        ledger: Ledger,
        applied: Iterable[Recorded],
        conflicts: Iterable[Recorded] = (),
        offsets: dict[tuple[str, int], int] | None = None,
        waiting: Iterable[Recorded] = (),
        superseded: Iterable[Recorded] = (),
    ) -> None:
        """`superseded`: applied events rolled back by a winner (their rows leave sm_events; pass
        them in `conflicts` too)."""
        assert self.pool
        applied = list(applied)
        superseded = list(superseded)
        touched = {(r.aggregate_type, r.aggregate_id) for r in applied + superseded}
        async with self.pool.acquire() as conn, conn.transaction():
            if superseded:
                await conn.execute(
                    "delete from sm_events where id = any($1::text[])", [r.id for r in superseded]
                )
            if applied:
                await conn.execute(
                    "delete from sm_waiting where id = any($1::text[])", [r.id for r in applied]
                )
            for table, recs in (
                ("sm_events", applied),
                ("sm_conflicts", list(conflicts)),
                ("sm_waiting", list(waiting)),
            ):
                if recs:
                    await conn.executemany(
                        f"insert into {table} (id, aggregate_type, aggregate_id, version, type, ts, site, payload, "
                        "prev, actor) values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) on conflict (id) do nothing",
                        [
                            (
                                r.id,
                                r.aggregate_type,
                                r.aggregate_id,
                                r.version,
                                r.type,
                                r.ts,
                                r.site,
                                json.loads(to_payload(r.event)),
                                r.prev,
                                r.actor,
                            )
                            for r in recs
                        ],
                    )
            for t, i in touched:
                agg = ledger.get(t, i)
                await conn.execute(
                    "insert into sm_aggregates values ($1,$2,$3,$4) on conflict (aggregate_type, aggregate_id) "
                    "do update set version=excluded.version, state=excluded.state",
                    t,
                    i,
                    agg.version,
                    agg.state(),
                )
            if offsets:
                await conn.executemany(
                    "insert into sm_offsets values ($1,$2,$3) on conflict (topic, kpartition) "
                    "do update set next_offset=greatest(sm_offsets.next_offset, excluded.next_offset)",
                    [(t, p, o) for (t, p), o in offsets.items()],
                )

    async def offsets(self) -> dict[tuple[str, int], int]:
        assert self.pool
        return {
            (r["topic"], r["kpartition"]): r["next_offset"]
            for r in await self.pool.fetch("select * from sm_offsets")
        }

    # --- queries (what the REST API answers) -----------------------------------------------------
    async def states(self, aggregate_type: str) -> list[dict[str, Any]]:
        assert self.pool
        rows = await self.pool.fetch(
            "select state from sm_aggregates where aggregate_type=$1 order by aggregate_id",
            aggregate_type,
        )
        return [r["state"] for r in rows]

    async def state(self, aggregate_type: str, aggregate_id: str) -> dict[str, Any] | None:
        assert self.pool
        return await self.pool.fetchval(
            "select state from sm_aggregates where aggregate_type=$1 and aggregate_id=$2",
            aggregate_type,
            aggregate_id,
        )

    async def events(self, aggregate_type: str, aggregate_id: str) -> list[dict[str, Any]]:
        assert self.pool
        rows = await self.pool.fetch(
            "select id, version, type, ts, site, actor, payload from sm_events where aggregate_type=$1 and aggregate_id=$2 "
            "order by version",
            aggregate_type,
            aggregate_id,
        )
        return [dict(r) for r in rows]

    async def conflicts(self) -> list[dict[str, Any]]:
        assert self.pool
        return [dict(r) for r in await self.pool.fetch("select * from sm_conflicts order by ts")]


async def _json_codec(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

"""A site manager faked at the API boundary: the real domain and application layer, events kept
in memory instead of Kafka and Postgres, recovery operations recorded instead of run."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI

from tapstream.site_manager.api import make_api
from tapstream.site_manager.application import ACTOR, Application
from tapstream.site_manager.auth import TokenStore
from tapstream.site_manager.domain import Aggregate, CheckpointLog, Ledger, Recorded
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain.events import to_payload


class FakeProjection:
    def __init__(self, sm: FakeSiteManager) -> None:
        self.sm = sm

    async def state(self, t: str, i: str) -> dict[str, Any] | None:
        return self.sm.ledger.get(t, i).state() if (t, i) in self.sm.ledger.entries else None

    async def states(self, t: str) -> list[dict[str, Any]]:
        return [a.state() for a in self.sm.ledger.all(t)]

    async def events(self, t: str, i: str) -> list[dict[str, Any]]:
        return [
            {"id": r.id, "version": r.version, "type": r.type, "ts": r.ts, "site": r.site,
             "actor": r.actor, "payload": json.loads(to_payload(r.event))}
            for r in self.sm.recorded
            if (r.aggregate_type, r.aggregate_id) == (t, i)
        ]  # fmt: skip

    async def conflicts(self) -> list[dict[str, Any]]:
        return []


class FakeOperations:
    def __init__(self, sm: FakeSiteManager) -> None:
        self.sm = sm
        self.calls: list[tuple[str, str, str]] = []  # (what, group, actor)

    async def control(self, group: str, kind: str, *_: Any, **__: Any) -> None:
        self.calls.append((kind, group, ACTOR.get()))

    async def checkpoint(self, group: str, tag: str | None) -> str:
        cp = f"cp-{len(self.calls)}"
        self.calls.append(("checkpoint", group, ACTOR.get()))
        log_id = CheckpointLog.id_of(group, self.sm.site)
        await self.sm.execute("checkpoints", log_id, c.RecordCheckpoint(cp, tag or "", "protected"))
        return cp

    async def checkpoints(self, group: str) -> list[dict[str, Any]]:
        return []

    async def status(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"group": state["name"], "converged": True}

    async def begin(self, kind: str, state: dict[str, Any], checkpoint: str) -> dict[str, Any]:
        self.calls.append((kind, state["name"], ACTOR.get()))
        return {"id": "op-1", "kind": kind, "status": "running"}

    async def stop_test(self, state: dict[str, Any]) -> dict[str, Any]:
        return await self.begin("failover-test-stop", state, "")


class FakeSiteManager:
    def __init__(self, site: str = "protected") -> None:
        self.site = site
        self.ready = True
        self.ledger = Ledger()
        self.recorded: list[Recorded] = []
        self.app = Application(site, self.ledger, self._sink)
        self.projection = FakeProjection(self)
        self.operations = FakeOperations(self)
        self.events = SimpleNamespace(caught_up=asyncio.Event())

    async def _sink(self, recs: list[Recorded]) -> None:
        self.recorded += recs

    async def execute(
        self, t: str, i: str, command: c.Command, expected_version: int | None = None
    ) -> Aggregate:
        return await self.app.execute(t, i, command, expected_version)


def make_test_api(sm: FakeSiteManager, tokens: TokenStore) -> FastAPI:
    return make_api(sm, sm.operations, tokens)  # type: ignore[arg-type]

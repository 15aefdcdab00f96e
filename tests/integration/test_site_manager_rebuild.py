"""The site manager's REST API and event-sourced state on real Kafka, MirrorMaker 2 and Postgres:
optimistic concurrency, errors that say what to do, the other site seeing the same state through
the mirrored tapstream.events, and a projection dropped and rebuilt from the topics that equals the
one before."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import asyncpg
import httpx
import pytest

from .services_harness import wait_until
from .site_manager_harness import start_site_manager

pytestmark = pytest.mark.integration
NO_SERVICES = {"TAPSTREAM_SITE_MANAGER_RUN_SERVICES": "false"}


def projection(url: str) -> list[tuple]:
    async def q() -> list[tuple]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("select aggregate_type, aggregate_id, version, state::text from sm_aggregates "
                                    "order by 1, 2")
            events = await conn.fetch("select id, version, type, payload::text from sm_events order by 1")
            return [tuple(r) for r in rows] + [tuple(r) for r in events]
        finally:
            await conn.close()
    return asyncio.run(q())


def test_rest_concurrency_mirroring_and_rebuild(stack, tmp_path: Path, unique_name: str) -> None:
    group = unique_name
    pm = start_site_manager(stack, tmp_path, "protected", [group], NO_SERVICES)
    rm = None
    try:
        api = httpx.Client(base_url=pm.url, timeout=30)
        assert "/groups/{name}/failover-test" in api.get("/openapi.json").json()["paths"]
        r = api.post("/groups", json={"name": group, "mode": "async", "rpo_target_s": 10})
        assert r.status_code == 201 and r.json()["version"] == 1
        r = api.post("/groups", json={"name": group})
        assert r.status_code == 409 and f"tapstream group show {group}" in r.json()["detail"]
        r = api.post(f"/groups/{group}/vms/vm1/volumes", json={"volume": "d0", "path": "/x"})
        assert r.status_code == 409 and "add-vm" in r.json()["detail"]
        assert api.get("/groups/nope-" + group).status_code == 404
        assert api.post(f"/groups/{group}/vms", json={"vm": "vm1"}, headers={"If-Match": "1"}).status_code == 201
        for i in range(2):
            assert api.post(f"/groups/{group}/vms/vm1/volumes", json={"volume": f"d{i}", "path": f"/v/d{i}.img"}
                            ).status_code == 201
        assert api.put(f"/groups/{group}/vms/vm1/target", json={"target_vm": "vm1-dr"}).json()["version"] == 5
        # A writer that read an older version is refused, not merged.
        r = api.patch(f"/groups/{group}", json={"rpo_target_s": 5}, headers={"If-Match": "4"})
        assert r.status_code == 409 and "reload it and retry" in r.json()["detail"]
        # Two writers that both read version 5: exactly one wins.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(lambda vm: httpx.post(f"{pm.url}/groups/{group}/vms", json={"vm": vm},
                                                          headers={"If-Match": "5"}, timeout=30).status_code,
                                    ["a", "b"]))
        assert codes == [201, 409], codes
        assert api.post(f"/groups/{group}/pause", json={"reason": "maintenance"}).json()["status"] == "paused"
        r = api.post(f"/groups/{group}/pause")
        assert r.status_code == 409 and "not protecting" in r.json()["detail"]
        assert api.post(f"/groups/{group}/resume").json()["status"] == "protecting"
        r = api.post(f"/groups/{group}/failover")
        assert r.status_code == 409 and "recovery site" in r.json()["detail"]
        state = api.get(f"/groups/{group}").json()
        assert state["version"] == 8 and [v["name"] for v in state["vms"][0]["volumes"]] == ["d0", "d1"]
        events = api.get(f"/groups/{group}/events").json()
        assert [e["type"] for e in events][:3] == ["GroupCreated", "VmAdded", "VolumeAdded"]
        assert "tapstream_site_manager_events_total" in api.get("/metrics/").text

        # The recovery site's manager sees the same group through MirrorMaker 2.
        rm = start_site_manager(stack, tmp_path, "recovery", [group], NO_SERVICES)
        wait_until("the group at the recovery site", lambda: httpx.get(f"{rm.url}/groups/{group}").status_code == 200
                   and httpx.get(f"{rm.url}/groups/{group}").json() == state, timeout=60)

        # Rebuild: drop the projection, read the topics again, get the same state.
        before = projection(stack.protected_database_url)
        assert any(r[:2] == ("group", group) for r in before)
        assert pm.stop() == 0, "the site manager did not stop cleanly on SIGTERM"
        # Same address: registering the site again is then no new event.
        pm = start_site_manager(stack, tmp_path, "protected", [group], {
            **NO_SERVICES, "TAPSTREAM_SITE_MANAGER_REBUILD": "true",
            "TAPSTREAM_SITE_MANAGER_PORT": pm.url.rsplit(":", 1)[1]})
        assert "rebuilding" in pm.log.read_text()
        assert projection(stack.protected_database_url) == before
        assert httpx.get(f"{pm.url}/groups/{group}").json() == state
    finally:
        assert pm.stop() == 0
        if rm is not None:
            assert rm.stop() == 0

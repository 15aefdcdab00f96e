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


def projection(url: str) -> tuple[dict[tuple[str, str], tuple[int, str]], set[tuple]]:
    """(aggregate -> (version, state), every event) of a site's projection."""

    async def q() -> tuple[dict[tuple[str, str], tuple[int, str]], set[tuple]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "select aggregate_type, aggregate_id, version, state::text from sm_aggregates"
            )
            events = await conn.fetch(
                "select id, aggregate_id, version, type, payload::text from sm_events"
            )
            return {(r[0], r[1]): (r[2], r[3]) for r in rows}, {tuple(r) for r in events}
        finally:
            await conn.close()

    return asyncio.run(q())


def test_rest_concurrency_mirroring_and_rebuild(stack, tmp_path: Path, unique_name: str) -> None:
    group = unique_name
    pm = start_site_manager(stack, tmp_path, "protected", [group], NO_SERVICES)
    rm = None
    try:
        api = pm.client()
        assert "/groups/{name}/failover-test" in api.get("/openapi.json").json()["paths"]
        # Only /health (and the metrics, the OpenAPI document) without a token; roles are enforced.
        assert httpx.get(f"{pm.url}/health", timeout=30).status_code == 200
        r = httpx.get(f"{pm.url}/groups", timeout=30)
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        r = api.get("/tokens")
        assert r.status_code == 200, r.text
        (admin,) = [t["name"] for t in r.json()]
        r = api.post("/tokens", json={"name": f"{group}-viewer", "role": "viewer"})
        viewer = {"Authorization": f"Bearer {r.json()['token']}"}
        assert httpx.get(f"{pm.url}/groups", headers=viewer, timeout=30).status_code == 200
        r = httpx.post(f"{pm.url}/groups", json={"name": group}, headers=viewer, timeout=30)
        assert r.status_code == 403 and "needs admin" in r.json()["detail"]
        r = api.post(
            "/groups",
            content=f'{{"name": "{group}", "rpo_target_s": NaN}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, r.text
        r = api.post("/groups", json={"name": group, "mode": "async", "rpo_target_s": 10})
        assert r.status_code == 201 and r.json()["version"] == 1
        r = api.post("/groups", json={"name": group})
        assert r.status_code == 409 and f"tapstream group show {group}" in r.json()["detail"]
        r = api.post(
            f"/groups/{group}/vms/vm1/volumes", json={"volume": "d0", "path": str(tmp_path / "x")}
        )
        assert r.status_code == 409 and "add-vm" in r.json()["detail"]
        assert api.get("/groups/nope-" + group).status_code == 404
        assert (
            api.post(
                f"/groups/{group}/vms", json={"vm": "vm1"}, headers={"If-Match": "1"}
            ).status_code
            == 201
        )
        for i in range(2):
            assert (
                api.post(
                    f"/groups/{group}/vms/vm1/volumes",
                    json={"volume": f"d{i}", "path": str(tmp_path / f"d{i}.img")},
                ).status_code
                == 201
            )
        assert (
            api.put(f"/groups/{group}/vms/vm1/target", json={"target_vm": "vm1-dr"}).json()[
                "version"
            ]
            == 5
        )
        # A writer that read an older version is refused, not merged.
        r = api.patch(f"/groups/{group}", json={"rpo_target_s": 5}, headers={"If-Match": "4"})
        assert r.status_code == 409 and "reload it and retry" in r.json()["detail"]
        # Two writers that both read version 5: exactly one wins.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            codes = sorted(
                pool.map(
                    lambda vm: (
                        httpx.post(
                            f"{pm.url}/groups/{group}/vms",
                            json={"vm": vm},
                            headers={**pm.headers, "If-Match": "5"},
                            timeout=30,
                        ).status_code
                    ),
                    ["a", "b"],
                )
            )
        assert codes == [201, 409], codes
        assert (
            api.post(f"/groups/{group}/pause", json={"reason": "maintenance"}).json()["status"]
            == "paused"
        )
        r = api.post(f"/groups/{group}/pause")
        assert r.status_code == 409 and "not protecting" in r.json()["detail"]
        assert api.post(f"/groups/{group}/resume").json()["status"] == "protecting"
        r = api.post(f"/groups/{group}/failover")
        assert r.status_code == 409 and "recovery site" in r.json()["detail"]
        state = api.get(f"/groups/{group}").json()
        assert state["version"] == 8 and [v["name"] for v in state["vms"][0]["volumes"]] == [
            "d0",
            "d1",
        ]
        events = api.get(f"/groups/{group}/events").json()
        assert [e["type"] for e in events][:3] == ["GroupCreated", "VmAdded", "VolumeAdded"]
        assert {e["actor"] for e in events} == {admin}  # every change was the admin's
        assert "tapstream_site_manager_events_total" in api.get("/metrics/").text
        # The refused writer above left no event behind: nothing of this group is kept aside.
        assert all(c["aggregate_id"] != group for c in api.get("/conflicts").json())

        # The recovery site's manager sees the same group through MirrorMaker 2.
        rm = start_site_manager(stack, tmp_path, "recovery", [group], NO_SERVICES)
        wait_until(
            "the group at the recovery site",
            lambda: (
                httpx.get(f"{rm.url}/groups/{group}", headers=rm.headers).status_code == 200
                and httpx.get(f"{rm.url}/groups/{group}", headers=rm.headers).json() == state
            ),
            timeout=60,
        )

        # The actor crossed MirrorMaker 2 with the events.
        r_events = httpx.get(f"{rm.url}/groups/{group}/events", headers=rm.headers).json()
        assert [(e["type"], e["actor"]) for e in r_events] == [
            (e["type"], e["actor"]) for e in events
        ]

        # Rebuild: drop the projection, read the topics again, get the same state.
        before, before_events = projection(stack.protected_database_url)
        assert before[("group", group)][0] == 8
        assert pm.stop() == 0, "the site manager did not stop cleanly on SIGTERM"
        # Same address: registering the site again is then no new event.
        pm = start_site_manager(
            stack,
            tmp_path,
            "protected",
            [group],
            {
                **NO_SERVICES,
                "TAPSTREAM_SITE_MANAGER_REBUILD": "true",
                "TAPSTREAM_SITE_MANAGER_PORT": pm.url.rsplit(":", 1)[1],
            },
        )
        assert "rebuilding" in pm.log.read_text()
        after, after_events = projection(stack.protected_database_url)
        assert after[("group", group)] == before[("group", group)]
        assert httpx.get(f"{pm.url}/groups/{group}", headers=pm.headers).json() == state
        rebuilt = httpx.get(f"{pm.url}/groups/{group}/events", headers=pm.headers).json()
        assert {e["actor"] for e in rebuilt} == {admin}
        # Every aggregate as it was, unless other tests' events (mirrored a little later) moved it on.
        assert before_events <= after_events
        changed = {
            k: (v, after.get(k))
            for k, v in before.items()
            if after.get(k) != v and (after.get(k) is None or after[k][0] <= v[0])
        }
        assert not changed, changed

        # A site manager killed during a move: the next one fails the operation and releases the group.
        r = httpx.post(f"{rm.url}/groups/{group}/move", headers=rm.headers, timeout=30)
        assert r.status_code == 202, r.text
        op = r.json()["id"]
        wait_until(
            "the move running",
            lambda: (
                httpx.get(f"{rm.url}/groups/{group}", headers=rm.headers).json()["status"]
                == "failing_over"
            ),
        )
        rm.proc.kill()
        rm.proc.wait(30)
        rm = start_site_manager(
            stack,
            tmp_path,
            "recovery",
            [group],
            {**NO_SERVICES, "TAPSTREAM_SITE_MANAGER_PORT": rm.url.rsplit(":", 1)[1]},
        )
        done = httpx.get(f"{rm.url}/operations/{op}", headers=rm.headers).json()
        assert done["status"] == "failed" and "retry" in done["error"], done
        g = httpx.get(f"{rm.url}/groups/{group}", headers=rm.headers).json()
        assert (g["status"], g["operation"]) == ("protecting", None)
        rows = httpx.get(f"{rm.url}/groups/{group}/events", headers=rm.headers).json()
        trail = [e["type"] for e in rows]
        # The operator's move, and the abort the next site manager decided on its own.
        by = {e["type"]: e["actor"] for e in rows}
        assert (by["FailoverStarted"], by["FailoverAborted"]) == (admin, "system")
        fences = ("WritesFenced", "WritesUnfenced")
        assert [t for t in trail if t not in fences][-2:] == ["FailoverStarted", "FailoverAborted"]
        # Whether or not the move had fenced the protected site before it was killed, the abort
        # gave the writes back: no fence is left recorded.
        assert g["fenced"] == {} and trail.count("WritesFenced") == trail.count("WritesUnfenced")
    finally:
        assert pm.stop() == 0
        if rm is not None:
            assert rm.stop() == 0

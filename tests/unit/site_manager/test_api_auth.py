"""The REST API's doors: 401 without a valid token, 403 for a role too low, the actor on every
event, and 422 for NaN, infinities, out-of-range numbers and unknown fields (FastAPI's TestClient
on the real API, the site manager faked at its boundary)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tapstream.site_manager.auth import Role, TokenStore
from tapstream.site_manager.domain import commands as c

from .fake_site_manager import FakeSiteManager, make_test_api


@dataclass
class Api:
    client: TestClient
    sm: FakeSiteManager
    store: TokenStore
    tokens: dict[str, str]  # role -> token

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {r: store.issue(f"{r}-1", Role.parse(r)) for r in ("viewer", "operator", "admin")}
    sm = FakeSiteManager()
    with TestClient(make_test_api(sm, store)) as client:
        yield Api(client, sm, store, tokens)


def create_group(api: Api, name: str = "g1") -> None:
    r = api.client.post("/groups", json={"name": name}, headers=api.as_("admin"))
    assert r.status_code == 201, r.text


def test_no_token_is_401_with_what_to_do(api: Api) -> None:
    r = api.client.get("/groups")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["detail"]
    assert "tapstream token issue" in r.json()["detail"]


def test_a_wrong_token_is_401(api: Api) -> None:
    for header in ("Bearer " + api.tokens["admin"][:-1] + "x", "Basic YWRtaW46YWRtaW4=", "Bearer"):
        r = api.client.get("/groups", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = api.client.get("/groups", headers={"Authorization": "Bearer nope"})
    assert "not valid at the protected site" in wrong.json()["detail"]


def test_before_any_token_the_401_says_how_to_issue_the_first(tmp_path: Path) -> None:
    with TestClient(make_test_api(FakeSiteManager(), TokenStore(tmp_path / "none.json"))) as cl:
        r = cl.get("/groups", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 401
    assert "python -m tapstream.site_manager token issue NAME --role admin" in r.json()["detail"]


def test_health_metrics_and_the_openapi_document_are_open(api: Api) -> None:
    assert api.client.get("/health").json()["site"] == "protected"
    assert api.client.get("/metrics/").status_code == 200
    assert "/groups" in api.client.get("/openapi.json").json()["paths"]


def test_an_unauthenticated_caller_learns_nothing_about_validation(api: Api) -> None:
    r = api.client.post(
        "/groups", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 401


def test_a_viewer_reads_but_cannot_take_a_checkpoint(api: Api) -> None:
    create_group(api)
    assert api.client.get("/groups/g1", headers=api.as_("viewer")).status_code == 200
    r = api.client.post("/groups/g1/checkpoints", json={}, headers=api.as_("viewer"))
    assert r.status_code == 403
    detail = r.json()["detail"]
    assert "'viewer-1' has the role viewer" in detail and "needs operator" in detail
    assert "--role operator" in detail
    assert api.sm.operations.calls == []


def test_an_operator_checkpoints_and_moves_but_cannot_create_a_group(api: Api) -> None:
    create_group(api)
    r = api.client.post("/groups", json={"name": "g2"}, headers=api.as_("operator"))
    assert r.status_code == 403 and "needs admin" in r.json()["detail"]
    r = api.client.post("/groups/g1/checkpoints", json={"tag": "t"}, headers=api.as_("operator"))
    assert r.status_code == 201
    assert api.client.post("/groups/g1/move", headers=api.as_("operator")).status_code == 202
    assert api.client.get("/tokens", headers=api.as_("operator")).status_code == 403
    assert api.client.delete("/groups/g1", headers=api.as_("operator")).status_code == 403
    assert [(w, a) for w, _, a in api.sm.operations.calls] == [
        ("checkpoint", "operator-1"),
        ("move", "operator-1"),
    ]


def test_tokens_through_the_api_and_revocation(api: Api) -> None:
    r = api.client.post("/tokens", json={"name": "ci", "role": "viewer"}, headers=api.as_("admin"))
    assert r.status_code == 201
    token = r.json()["token"]
    assert (
        api.client.get("/groups", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    listed = api.client.get("/tokens", headers=api.as_("admin")).json()
    assert {t["name"]: t["role"] for t in listed}["ci"] == "viewer"
    assert all(set(t) == {"name", "role", "created"} for t in listed)  # never a hash
    assert token not in json.dumps(listed)
    dup = api.client.post("/tokens", json={"name": "ci", "role": "admin"}, headers=api.as_("admin"))
    assert dup.status_code == 409
    assert api.client.delete("/tokens/ci", headers=api.as_("admin")).json()["revoked"] is True
    assert (
        api.client.get("/groups", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    assert api.client.delete("/tokens/ci", headers=api.as_("admin")).status_code == 404


def test_every_event_records_its_actor(api: Api) -> None:
    create_group(api)
    h_admin, h_op = api.as_("admin"), api.as_("operator")
    api.client.post("/groups/g1/vms", json={"vm": "web"}, headers=h_admin).raise_for_status()
    api.client.post("/groups/g1/pause", json={"reason": "x"}, headers=h_op).raise_for_status()
    api.client.post("/groups/g1/checkpoints", json={}, headers=h_op).raise_for_status()
    trail = api.client.get("/groups/g1/events", headers=api.as_("viewer")).json()
    assert [(e["type"], e["actor"]) for e in trail] == [
        ("GroupCreated", "admin-1"),
        ("VmAdded", "admin-1"),
        ("ProtectionPaused", "operator-1"),
        ("CheckpointTaken", "operator-1"),
    ]


async def test_the_site_managers_own_decisions_are_the_systems() -> None:
    sm = FakeSiteManager()
    await sm.execute("group", "g1", c.CreateGroup())
    assert [r.actor for r in sm.recorded] == ["system"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/groups", '{"name": "g9", "rpo_target_s": NaN}'),
        ("/groups", '{"name": "g9", "journal_history_s": Infinity}'),
        ("/groups", '{"name": "g9", "checkpoint_interval_s": -Infinity}'),
        ("/groups", '{"name": "g9", "rpo_target_s": 1e400}'),  # json.loads makes it inf
        ("/groups", '{"name": "g9", "rpo_target_s": 0}'),
        ("/groups", '{"name": "g9", "rpo_target_s": 1e12}'),
        ("/groups", '{"name": "g9", "mode": "fast"}'),
        ("/groups", '{"name": "g9", "colour": "blue"}'),
        ("/groups", '{"name": "../etc"}'),  # the domain's check (core.names)
        ("/groups", '{"name": "a\\u0000b"}'),
        ("/tokens", '{"name": "a..b", "role": "viewer"}'),
        ("/groups/g1/vms/web/volumes", '{"volume": "d", "path": "/x", "size": -1}'),
        ("/groups/g1/vms/web/volumes", '{"volume": "d", "path": "/x", "size": 1e30}'),
        ("/groups/g1/vms/web/volumes", '{"volume": "d", "path": "/x\\u0000"}'),
        ("/groups/g1/vms/web/volumes", '{"volume": "d", "path": "/x", "extra": 1}'),
        ("/groups/g1/pause", '{"reason": "\\ud800"}'),
        ("/groups/g1/failover", '{"checkpoint": "latest", "force": true}'),
        ("/tokens", '{"name": "x", "role": "root"}'),
    ],
)
def test_bad_bodies_are_422(api: Api, path: str, body: str) -> None:
    create_group(api)
    before = len(api.sm.recorded)
    r = api.client.post(
        path, content=body, headers={**api.as_("admin"), "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert json.loads(r.text)["detail"]  # valid JSON, NaN or not
    assert len(api.sm.recorded) == before


def test_patch_rejects_nan_and_a_bad_if_match(api: Api) -> None:
    create_group(api)
    headers = {**api.as_("admin"), "content-type": "application/json"}
    r = api.client.patch("/groups/g1", content='{"rpo_target_s": NaN}', headers=headers)
    assert r.status_code == 422
    r = api.client.patch(
        "/groups/g1", json={"rpo_target_s": 5}, headers={**headers, "If-Match": "-1"}
    )
    assert r.status_code == 422
    r = api.client.patch(
        "/groups/g1", json={"rpo_target_s": 5}, headers={**headers, "If-Match": "1"}
    )
    assert r.status_code == 200 and r.json()["rpo_target_s"] == 5


def test_bad_names_in_the_path_are_422_not_a_database_error(api: Api) -> None:
    for path in ("/groups/a%00b", "/groups/..", "/operations/x%00"):
        r = api.client.get(path, headers=api.as_("viewer"))
        assert r.status_code in (404, 422), (path, r.status_code)


def test_an_unreadable_token_store_lets_nobody_in(api: Api) -> None:
    api.store.path.write_text("{not json")
    r = api.client.get("/groups", headers=api.as_("admin"))
    assert r.status_code == 503 and "token store" in r.json()["detail"]
    assert api.client.get("/health").status_code == 200

"""The console's doors and forms on the real app (FastAPI's TestClient, the site manager faked at
its boundary as in test_api_auth): sign-in with the API's tokens into an HttpOnly SameSite=Strict
cookie, the API's roles on each action, CSRF tokens, and the failover's confirmation by name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tapstream.core.settings import TapstreamSettings
from tapstream.site_manager.auth import Role, TokenStore
from tapstream.site_manager.console import Telemetry, mount_console
from tapstream.site_manager.console.session import csrf_token
from tapstream.site_manager.domain import commands as c

from .fake_site_manager import FakeSiteManager, make_test_api


@dataclass
class Console:
    client: TestClient
    sm: FakeSiteManager
    tokens: dict[str, str]
    telemetry: Telemetry

    def sign_in(self, role: str) -> None:
        r = self.client.post("/console/login", data={"token": self.tokens[role], "next": ""})
        assert r.status_code == 303, r.text

    def act(self, kind: str, role: str, **form: str) -> object:
        self.sign_in(role)
        data = {"csrf": csrf_token(self.tokens[role]), **form}
        return self.client.post(f"/console/groups/g1/{kind}", data=data)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {r: store.issue(f"{r}-1", Role.parse(r)) for r in ("viewer", "operator", "admin")}
    sm = FakeSiteManager(site="recovery")
    api = make_test_api(sm, store)
    telemetry = Telemetry(TapstreamSettings())
    mount_console(api, sm, sm.operations, store, telemetry)  # type: ignore[arg-type]
    with TestClient(api, follow_redirects=False) as client:
        client.portal.call(sm.execute, "group", "g1", c.CreateGroup("sync", 5.0, 60.0, 2.0))
        yield Console(client, sm, tokens, telemetry)


def test_pages_need_a_sign_in_and_send_back_after_it(console: Console) -> None:
    r = console.client.get("/console/groups/g1")
    assert (
        r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/groups/g1"
    )
    assert console.client.get("/").headers["location"] == "/console/"
    r = console.client.post(
        "/console/login", data={"token": console.tokens["viewer"], "next": "/console/groups/g1"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/groups/g1"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    for page in ("/console/", "/console/groups/g1", "/console/operations", "/console/alerts"):
        r = console.client.get(page)
        assert r.status_code == 200, (page, r.text)
        assert "g1" in r.text or page == "/console/alerts"


def test_a_wrong_token_and_an_outside_redirect_are_refused(console: Console) -> None:
    r = console.client.post("/console/login", data={"token": "nope", "next": ""})
    assert r.status_code == 401 and "not valid at the recovery site" in r.text
    r = console.client.post(
        "/console/login", data={"token": console.tokens["viewer"], "next": "//evil.example/"}
    )
    assert r.headers["location"] == "/console/"


def test_roles_are_the_apis(console: Console) -> None:
    r = console.act("move", "viewer")
    assert r.status_code == 403 and "needs operator" in r.text  # type: ignore[attr-defined]
    assert console.sm.operations.calls == []
    r = console.act("move", "operator")
    assert r.status_code == 303 and r.headers["location"] == "/console/operations/op-1"  # type: ignore[attr-defined]
    # The caller's token name is the actor, as with the API.
    assert console.sm.operations.calls == [("move", "g1", "operator-1")]


def test_a_form_without_its_csrf_token_or_from_another_site_does_nothing(console: Console) -> None:
    console.sign_in("admin")
    r = console.client.post("/console/groups/g1/move", data={"csrf": "forged"})
    assert r.status_code == 403 and console.sm.operations.calls == []
    r = console.client.post(
        "/console/groups/g1/move",
        data={"csrf": csrf_token(console.tokens["admin"])},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403 and console.sm.operations.calls == []
    r = console.client.post(
        "/console/login",
        data={"token": console.tokens["viewer"]},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_a_failover_must_be_confirmed_naming_its_checkpoint(console: Console) -> None:
    r = console.act("failover", "operator", checkpoint="cp-9")
    assert r.status_code == 400 and console.sm.operations.calls == []  # type: ignore[attr-defined]
    r = console.act("failover", "operator", checkpoint="cp-9", confirmed="cp-9")
    assert r.status_code == 303  # type: ignore[attr-defined]
    assert console.sm.operations.calls == [("failover", "g1", "operator-1")]


def test_a_refused_operation_shows_the_domains_reason(console: Console) -> None:
    console.sign_in("operator")
    r = console.client.post(
        "/console/groups/nosuch/move", data={"csrf": csrf_token(console.tokens["operator"])}
    )
    assert r.status_code == 404 and "tapstream group list" in r.text


def test_an_alert_offers_a_failover_test_at_its_last_clean_checkpoint(console: Console) -> None:
    console.telemetry.alerts.append(
        {
            "group": "g1",
            "volume": "d0",
            "kind": "encryption",
            "severity": "CRITICAL",
            "onset_ts": 1,
            "detected_ts": 2,
            "score": 0.9,
            "encrypted_share": 0.8,
            "last_clean_checkpoint": "cp-clean",
            "message": "encrypted writes",
        }
    )
    console.sign_in("operator")
    page = console.client.get("/console/alerts").text
    assert 'name="checkpoint" value="cp-clean"' in page and "test-last-clean" in page
    assert "80 %" in page
    r = console.client.post(
        "/console/groups/g1/failover-test",
        data={"csrf": csrf_token(console.tokens["operator"]), "checkpoint": "cp-clean"},
    )
    assert r.status_code == 303
    assert console.sm.operations.calls == [("failover-test", "g1", "operator-1")]
    # Not while the group cannot take a failover test.
    console.client.portal.call(
        console.sm.execute, "group", "g1", c.PauseProtection("")
    )  # paused: still allowed
    assert "test-last-clean" in console.client.get("/console/alerts?q=g1").text
    assert "no alerts" in console.client.get("/console/alerts?q=other").text
    # A viewer sees the alert, not the button.
    console.sign_in("viewer")
    assert "test-last-clean" not in console.client.get("/console/alerts").text


def test_a_page_that_fails_says_so_in_a_page(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(_: str) -> list[dict]:
        raise ConnectionError("projection unreachable")

    monkeypatch.setattr(console.sm.projection, "states", down)
    with TestClient(console.client.app, raise_server_exceptions=False) as client:
        r = client.post("/console/login", data={"token": console.tokens["viewer"]})
        assert r.status_code == 500 and "projection unreachable" in r.text  # followed to /console/
        assert "log has the details" in r.text


def test_an_operation_page_opened_before_postgres_has_it_shows_the_ledgers_state(
    console: Console,
) -> None:
    """The redirect after a click can arrive before the projection holds the new operation (its
    events came back from the topic first, and the topic's reader writes Postgres a moment later)."""
    console.client.portal.call(
        console.sm.execute, "operation", "op-7", c.StartOperation("move", "g1", {})
    )
    lagging = console.sm.projection

    class Behind:  # the projection before the reader's write commits
        async def state(self, t: str, i: str) -> None:
            return None

        def __getattr__(self, name: str) -> object:
            return getattr(lagging, name)

    console.sm.projection = Behind()  # type: ignore[assignment]
    console.sign_in("viewer")
    r = console.client.get("/console/operations/op-7")
    assert r.status_code == 200 and 'id="op-status"' in r.text, r.text
    r = console.client.get("/console/operations/op-8")
    assert r.status_code == 404 and "no operation op-8" in r.text

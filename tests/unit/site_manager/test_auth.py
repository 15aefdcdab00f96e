"""auth.py without a server: roles, which route needs which, the token store."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from tapstream.site_manager.auth import (
    Role,
    TokenError,
    TokenStore,
    bearer,
    hash_token,
    required_role,
)

from .fake_site_manager import FakeSiteManager, make_test_api


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR and str(Role.ADMIN) == "admin"
    with pytest.raises(ValueError, match="viewer, operator or admin"):
        Role.parse("root")


@pytest.mark.parametrize(
    ("method", "route", "role"),
    [
        ("GET", "/health", None),
        ("GET", "/groups", Role.VIEWER),
        ("GET", "/groups/{name}/events", Role.VIEWER),
        ("POST", "/groups/{name}/checkpoints", Role.OPERATOR),
        ("POST", "/groups/{name}/move", Role.OPERATOR),
        ("DELETE", "/groups/{name}/failover-test", Role.OPERATOR),
        ("POST", "/groups/{name}/pause", Role.OPERATOR),
        ("POST", "/groups", Role.ADMIN),
        ("PATCH", "/groups/{name}", Role.ADMIN),
        ("DELETE", "/groups/{name}", Role.ADMIN),
        ("POST", "/groups/{name}/vms/{vm}/volumes", Role.ADMIN),
        ("PUT", "/groups/{name}/vms/{vm}/target", Role.ADMIN),
        ("GET", "/tokens", Role.ADMIN),
        ("POST", "/tokens", Role.ADMIN),
        ("POST", "/some/new/route", Role.ADMIN),  # fails closed
    ],
)
def test_required_role(method: str, route: str, role: Role | None) -> None:
    assert required_role(method, route) == role


def test_every_api_route_but_health_needs_a_role(tmp_path: Path) -> None:
    api = make_test_api(FakeSiteManager(), TokenStore(tmp_path / "t.json"))
    routes = [(m, r.path) for r in api.routes if isinstance(r, APIRoute) for m in r.methods]
    assert len(routes) > 25
    public = [(m, p) for m, p in routes if required_role(m, p) is None]
    assert public == [("GET", "/health")]


def test_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer(None) is None and bearer("") is None and bearer("Basic abc") is None
    assert bearer("Bearer ") is None


def test_the_store_keeps_hashes_only_in_a_0600_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "sm" / "tokens.json")
    token = store.issue("alice", Role.OPERATOR)
    assert len(token) >= 40
    text = store.path.read_text()
    assert token not in text and hash_token(token) in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    who = store.authenticate(token)
    assert who is not None and (who.name, who.role) == ("alice", Role.OPERATOR)
    assert store.authenticate(token + "x") is None
    assert store.list() == [
        {"name": "alice", "role": "operator", "created": who.public()["created"]}
    ]


def test_a_second_writer_is_seen_and_revocation_is_immediate(tmp_path: Path) -> None:
    api_side, host_side = TokenStore(tmp_path / "t.json"), TokenStore(tmp_path / "t.json")
    assert api_side.tokens() == {}
    token = host_side.issue("root", Role.ADMIN)
    assert api_side.authenticate(token) is not None  # issued on the host, seen without a restart
    host_side.revoke("root")
    assert api_side.authenticate(token) is None
    assert json.loads((tmp_path / "t.json").read_text()) == {"tokens": []}


def test_names_are_checked_and_unique(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    store.issue("bob", Role.VIEWER)
    with pytest.raises(TokenError, match="exists already"):
        store.issue("bob", Role.ADMIN)
    for bad in ("system", "../x", "a b", ""):
        with pytest.raises(TokenError, match="invalid token name"):
            store.issue(bad, Role.VIEWER)
    with pytest.raises(TokenError, match="no token named"):
        store.revoke("carol")
    assert [t["name"] for t in store.list()] == ["bob"]

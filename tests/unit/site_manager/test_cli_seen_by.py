"""`tapstream move`/`failback` wait for the other site to see the outcome with the caller's token
(without it every answer was a 401, and each move and failback waited its full minute out)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tapstream.cli import groups


def test_seen_by_asks_with_the_token_and_returns_once_the_site_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAPSTREAM_ENV_FILE", "")
    monkeypatch.setenv("TAPSTREAM_API_TOKEN", "tok")
    asked: list[dict[str, Any]] = []

    def get(url: str, **kw: Any) -> httpx.Response:
        asked.append(kw)
        ok = kw.get("headers", {}).get("Authorization") == "Bearer tok"
        body = {"active_site": "recovery"} if ok else {"detail": "needs a token"}
        return httpx.Response(200 if ok else 401, json=body)

    monkeypatch.setattr(groups.httpx, "get", get)
    op = {"status": "succeeded", "kind": "move", "group": "g1"}
    groups.seen_by("protected", op, timeout=2)
    assert len(asked) == 1 and asked[0]["timeout"] == 5

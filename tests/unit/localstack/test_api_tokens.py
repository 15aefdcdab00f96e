"""`up` issues the local site managers' admin token once and keeps it for local.env."""

from __future__ import annotations

import stat
from pathlib import Path

from tapstream.localstack.api_tokens import api_token_env
from tapstream.site_manager.auth import Role, TokenStore


def test_one_admin_token_kept_across_ups_and_renewed_when_revoked(tmp_path: Path) -> None:
    env = api_token_env(tmp_path)
    assert api_token_env(tmp_path) == env  # a second `up` keeps it
    store = TokenStore(Path(env["TAPSTREAM_SITE_MANAGER_TOKENS_FILE"]))
    who = store.authenticate(env["TAPSTREAM_API_TOKEN"])
    assert who is not None and who.role is Role.ADMIN
    kept = tmp_path / "site-manager" / "local-admin.token"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    store.revoke("local-admin")
    renewed = api_token_env(tmp_path)
    assert renewed["TAPSTREAM_API_TOKEN"] != env["TAPSTREAM_API_TOKEN"]
    assert store.authenticate(renewed["TAPSTREAM_API_TOKEN"]) is not None
    assert store.authenticate(env["TAPSTREAM_API_TOKEN"]) is None

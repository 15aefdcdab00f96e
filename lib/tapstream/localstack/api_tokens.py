"""The local stack's admin token for the site managers' REST API (site_manager/auth.py).

Both local site managers read one token store (`site-manager/tokens.json` under the state dir, their
default state dir); `up` issues a `local-admin` token there once, keeps it beside the store (mode
0600) and writes it into local.env, so the CLI, `make demo` and the tests are authenticated.
"""

from __future__ import annotations

from pathlib import Path

NAME = "local-admin"


def api_token_env(root: Path) -> dict[str, str]:
    """TAPSTREAM_SITE_MANAGER_TOKENS_FILE and TAPSTREAM_API_TOKEN of the stack under `root`."""
    from tapstream.core.durable import atomic_write
    from tapstream.site_manager.auth import Role, TokenError, TokenStore

    store = TokenStore(root / "site-manager" / "tokens.json")
    kept = store.path.with_name(f"{NAME}.token")
    token = kept.read_text().strip() if kept.exists() else ""
    if not token or store.authenticate(token) is None:
        # First `up`, or the token was revoked: a new one under the same name.
        try:
            store.revoke(NAME)
        except TokenError:
            pass
        token = store.issue(NAME, Role.ADMIN)
        atomic_write(kept, token + "\n", mode=0o600)
    return {
        "TAPSTREAM_SITE_MANAGER_TOKENS_FILE": str(store.path),
        "TAPSTREAM_API_TOKEN": token,
    }

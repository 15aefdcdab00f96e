"""Who is using the console: the API's bearer token, entered once in a form and kept in a cookie
(HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it), and a CSRF token
derived from it that every form carries. Roles are the API's: an action asks of the caller the
role its API route asks (`auth.required_role`)."""

from __future__ import annotations

import hashlib
import hmac

from tapstream.site_manager import auth
from tapstream.site_manager.auth import Role, Token, TokenStore

COOKIE = "tapstream_console"


def csrf_token(token: str) -> str:
    """The value forms carry: bound to the session's token, useless without reading the page."""
    return hmac.new(token.encode(), b"tapstream console csrf", hashlib.sha256).hexdigest()


def csrf_ok(token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(token), sent or "")


def cross_site(sec_fetch_site: str | None) -> bool:
    """Whether a browser says the request came from another site's page (`Sec-Fetch-Site`): such a
    POST is refused, sign-in included (a forged sign-in would act under the forger's token)."""
    return sec_fetch_site not in (None, "same-origin", "none")


def who(store: TokenStore, cookie: str | None) -> Token | None:
    """The token the cookie holds, or None (raises auth.TokenError when the store is unreadable,
    which refuses everyone, as the API does)."""
    store.tokens()
    return store.authenticate(cookie) if cookie else None


def refusal(t: Token, method: str, route: str, site: str) -> str | None:
    """Why `t` may not call the API's `method route` (None: it may), in the API's words."""
    need = auth.required_role(method, route)
    if need is None or t.role >= need:
        return None
    return (
        f"token {t.name!r} has the role {t.role}; this needs {need}: ask an admin of the {site} "
        f"site for a token with that role (`tapstream token issue NAME --role {need} --site {site}`)"
    )


def may(t: Token, method: str, route: str) -> bool:
    need = auth.required_role(method, route)
    return need is None or t.role >= need


__all__ = ["COOKIE", "Role", "cross_site", "csrf_ok", "csrf_token", "may", "refusal", "who"]

"""Who may call the site manager's REST API: bearer tokens, each with a name and a role.

A token is 32 random bytes (URL-safe text); the store keeps only its SHA-256 (a hash is enough for
a secret with that much entropy: nothing to brute-force, so no slow KDF) in a JSON file of mode
0600, replaced atomically and re-read when it changes, so a token issued on the host with
`python -m tapstream.site_manager token issue` works at once. The token's name is the actor
recorded on every domain event its requests cause. No I/O here but that file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from tapstream.core.durable import atomic_write
from tapstream.core.names import valid_name

SYSTEM = "system"  # the actor of the site manager's own decisions; no token may take the name


class Role(IntEnum):
    """Ordered: a role may do what every lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: viewer, operator or admin") from None


# Routes anyone may call: the load balancer's and the supervisor's probe.
PUBLIC = {("GET", "/health")}
# What an operator may do beyond reading: recover, test, checkpoint, pause. Everything else that
# changes something (groups, VMs, volumes, pairing, tokens) is the admin's: a new route that is
# not listed here fails closed.
OPERATOR = {
    ("POST", "/groups/{name}/checkpoints"),
    ("POST", "/groups/{name}/failover-test"),
    ("DELETE", "/groups/{name}/failover-test"),
    ("POST", "/groups/{name}/failover"),
    ("POST", "/groups/{name}/move"),
    ("POST", "/groups/{name}/reverse"),
    ("POST", "/groups/{name}/failback"),
    ("POST", "/groups/{name}/pause"),
    ("POST", "/groups/{name}/resume"),
}
# Reads that are not for viewers: the token list says who may act.
ADMIN_READS = {("GET", "/tokens")}


def required_role(method: str, route: str) -> Role | None:
    """The least role that may call `method route` (the route's template, e.g. /groups/{name});
    None: no credentials needed."""
    key = (method.upper(), route)
    if key in PUBLIC or (method.upper() == "HEAD" and ("GET", route) in PUBLIC):
        return None
    if key in ADMIN_READS:
        return Role.ADMIN
    if method.upper() in ("GET", "HEAD"):
        return Role.VIEWER
    if key in OPERATOR:
        return Role.OPERATOR
    return Role.ADMIN


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None if there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass(frozen=True)
class Token:
    name: str
    role: Role
    created: float  # Unix seconds
    sha256: str

    def public(self) -> dict[str, Any]:
        """What the API and the CLI show: never the hash."""
        return {
            "name": self.name,
            "role": str(self.role),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
        }


class TokenError(ValueError):
    """A token cannot be issued or revoked as asked; the message says why."""


class TokenStore:
    """The tokens of one site manager, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._tokens: dict[str, Token] = {}

    # --- reading (the API, on every request: a stat, a parse only when the file changed) --------
    def tokens(self) -> dict[str, Token]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._tokens = None, {}
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            self._tokens, self._seen = self._read(), stamp
        return self._tokens

    def _read(self) -> dict[str, Token]:
        try:
            rows = json.loads(self.path.read_text()).get("tokens", [])
            return {
                r["name"]: Token(r["name"], Role.parse(r["role"]), float(r["created"]), r["sha256"])
                for r in rows
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: nobody is let in on a store that cannot be read.
            raise TokenError(
                f"the token store {self.path} is unreadable ({exc}); fix or remove it and issue "
                "tokens again with `python -m tapstream.site_manager token issue`"
            ) from None

    def authenticate(self, token: str) -> Token | None:
        """The token's entry, or None. Every entry is compared, in constant time each."""
        digest = hash_token(token)
        found = None
        for t in self.tokens().values():
            if hmac.compare_digest(t.sha256, digest):
                found = t
        return found

    def list(self) -> list[dict[str, Any]]:
        return [t.public() for t in sorted(self.tokens().values(), key=lambda t: t.name)]

    # --- changing (under a lock: the API and the host's CLI may both write) ---------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Token]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self._read()
            yield tokens
            rows = [
                {**asdict(t), "role": str(t.role)}
                for t in sorted(tokens.values(), key=lambda t: t.name)
            ]
            atomic_write(self.path, json.dumps({"tokens": rows}, indent=2) + "\n", mode=0o600)
        finally:
            os.close(lock)

    def issue(self, name: str, role: Role) -> str:
        """A new token named `name`; returns it (shown once: only its hash is kept)."""
        if not valid_name(name) or name == SYSTEM:
            raise TokenError(
                f"invalid token name {name!r}: letters, digits, '.', '_' and '-', at most 128, "
                f"not {SYSTEM!r} (the site manager's own actor)"
            )
        token = secrets.token_urlsafe(32)
        with self._locked() as tokens:
            if name in tokens:
                raise TokenError(
                    f"a token named {name!r} exists already; revoke it first "
                    f"(`tapstream token revoke {name}`) or choose another name"
                )
            tokens[name] = Token(name, role, time.time(), hash_token(token))
        return token

    def revoke(self, name: str) -> Token:
        with self._locked() as tokens:
            if name not in tokens:
                raise TokenError(f"no token named {name!r}; list them with `tapstream token list`")
            return tokens.pop(name)

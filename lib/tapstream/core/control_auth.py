"""Signed tapstream.control commands: canonical bytes, HMAC-SHA256 signature, and who may send what.

Anyone who can write the control topic could otherwise fence a group, lift a fence, cut a
checkpoint's hold short or release a kept checkpoint. Every sender that holds the site's key (site
managers, VDSAs, tappers, the operator's CLI) signs what it sends; the tappers, VDSAs and journal act
only on commands that verify, and count the others (`tapstream_control_rejected_total`).

Policy: every kind needs a signature except a CHECKPOINT_TAG that keeps (adds a hold). That one is
what an analyzer (user code, no key) publishes after an alert; it can only make the recovery site
keep more, never release a checkpoint, lift a fence or pause writes. A release (keep=false) needs a
signature. An unsigned keep dated in the future is refused too: by ts it would outrank a later
signed release.

Replay: a signed command stays valid, so a copy written again could repeat it. Kept-checkpoint
commands are idempotent by ts (the later one wins), and checkpoint rounds by their ids; the fence
is not, so the tapper accepts each id once and only within TAPSTREAM_CONTROL_MAX_AGE_S of its ts.

With no key configured nothing is signed or checked (as before; each reader says so at start).
The key id travels with the command, so keys rotate: add the new key to every ring, sign with it,
then remove the old one. Pure logic apart from `Verifier` (logs and counts); no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from prometheus_client import Counter

from tapstream.core.logging import get_logger
from tapstream.core.metrics import NAMESPACE
from tapstream.core.settings import TapstreamSettings

log = get_logger("tapstream.core.control_auth")

# The command's fields that the signature covers, in this order (key_id included: a signature
# cannot be moved to another key). A new field that changes what a command does is added here with
# a new DOMAIN, so that verifiers of both versions can be told apart.
SIGNED_FIELDS = (
    "id", "group", "kind", "sender", "ts", "checkpoint_id", "tag", "volumes", "args", "key_id",
)  # fmt: skip
DOMAIN = b"tapstream.control.v1\n"

# Who sends each kind (signing with the site's key) and who acts on it; documentation for people
# and the test of the policy. The analyzer's unsigned CHECKPOINT_TAG is the one exception (above).
SENDERS: dict[str, tuple[str, ...]] = {
    "CHECKPOINT_PREPARE": ("vdsa coordinator",),
    "CHECKPOINT_PREPARED": ("tapper",),
    "CHECKPOINT_COMMIT": ("vdsa coordinator",),
    "CHECKPOINT_ABORT": ("vdsa coordinator",),
    "PAUSE": ("site manager",),
    "RESUME": ("site manager",),
    "RESYNC": ("site manager", "recovery vdsa", "cli"),
    "ANNOUNCE": ("tapper",),
    "CHECKPOINT_TAG": ("cli", "analyzer (unsigned, keep only)"),
}

REASONS = ("unsigned", "unknown_key", "bad_signature", "future", "stale", "replayed")

REJECTED = Counter(
    "control_rejected_total",
    "tapstream.control commands ignored: unsigned, badly signed, replayed or out of date.",
    ["service", "kind", "reason"],
    namespace=NAMESPACE,
)


@dataclass(frozen=True)
class Keyring:
    """The keys a process verifies with, and the one it signs with (None: it does not sign)."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    signing: str | None = None

    @classmethod
    def from_settings(cls, settings: TapstreamSettings) -> Keyring:
        keys = {k: v.get_secret_value().encode() for k, v in settings.control_keys.items()}
        signing = settings.control_key_id or (next(iter(keys)) if len(keys) == 1 else None)
        return cls(keys, signing)

    @property
    def enabled(self) -> bool:
        """Whether commands are signed and checked at all."""
        return bool(self.keys)


def canonical(cmd: Mapping[str, Any]) -> bytes:
    """The bytes a command's signature covers: SIGNED_FIELDS as compact JSON, keys and maps sorted."""
    body = {name: cmd.get(name) for name in SIGNED_FIELDS}
    body["volumes"] = list(body["volumes"] or [])
    body["args"] = dict(body["args"] or {})
    return DOMAIN + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def _mac(key: bytes, cmd: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(cmd), hashlib.sha256).hexdigest()


C = TypeVar("C", bound=Mapping[str, Any])  # a dict, or a core.records.Command


def sign(cmd: C, ring: Keyring) -> C:
    """A copy of `cmd` with key_id and signature; unsigned (both None) when `ring` has no signing key."""
    out = {**cmd, "key_id": None, "signature": None}
    if ring.signing is not None:
        out["key_id"] = ring.signing
        out["signature"] = _mac(ring.keys[ring.signing], out)
    return cast(C, out)


def signature_problem(cmd: Mapping[str, Any], ring: Keyring) -> str | None:
    """None if `cmd` is signed by a key of `ring`, else "unsigned", "unknown_key" or "bad_signature"."""
    key_id, signature = cmd.get("key_id"), cmd.get("signature")
    if not key_id or not signature:
        return "unsigned"
    key = ring.keys.get(key_id)
    if key is None:
        return "unknown_key"
    if not hmac.compare_digest(_mac(key, cmd), str(signature)):
        return "bad_signature"
    return None


def may_be_unsigned(cmd: Mapping[str, Any]) -> bool:
    """The policy's one exception: a CHECKPOINT_TAG that keeps a checkpoint (can only add a hold)."""
    if cmd.get("kind") != "CHECKPOINT_TAG":
        return False
    keep = str((cmd.get("args") or {}).get("keep", "true")).strip().lower()
    return keep not in ("false", "0", "no")


class SeenIds:
    """Ids accepted within the last `window_us` (by their ts): a copy of one is a replay."""

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self._ids: OrderedDict[str, int] = OrderedDict()

    def add(self, cid: str, ts: int, now_us: int) -> bool:
        """Remember `cid`; False if it was already seen."""
        # An id dated before the window is refused as stale anyway: no need to remember it.
        while self._ids and next(iter(self._ids.values())) < now_us - self.window_us:
            self._ids.popitem(last=False)
        if cid in self._ids:
            return False
        self._ids[cid] = ts
        return True


def check(
    cmd: Mapping[str, Any],
    ring: Keyring,
    now_us: int,
    window_us: int,
    seen: SeenIds | None = None,
) -> str | None:
    """None if `cmd` may be acted on, else the reason (one of REASONS) it must be ignored.

    `seen`: where each command must be acted on once (the fence); then a command must also be
    dated within `window_us` of `now_us` (the reader's clock, or the record's time in a replay of
    the topic's history) and not repeat an id. Without `seen` only a ts further than `window_us`
    in the future is refused."""
    if not ring.enabled:
        return None
    problem = signature_problem(cmd, ring)
    if problem is not None and not (problem == "unsigned" and may_be_unsigned(cmd)):
        return problem
    ts = int(cmd.get("ts") or 0)
    if ts > now_us + window_us:
        return "future"
    if seen is not None:
        if ts < now_us - window_us:
            return "stale"
        if not seen.add(str(cmd.get("id")), ts, now_us):
            return "replayed"
    return None


class Verifier:
    """One reader's check of the commands it reads: logs and counts what it ignores."""

    def __init__(
        self,
        settings: TapstreamSettings,
        service: str,
        acts_on: Iterable[str] | None = None,
        replay_guard: bool = False,
    ) -> None:
        self.ring = Keyring.from_settings(settings)
        self.service = service
        # Kinds this reader does something with; the rest pass (it ignores them anyway), so that
        # other readers' traffic and old history are neither checked nor counted here.
        self.acts_on = frozenset(acts_on) if acts_on is not None else None
        self.window_us = int(settings.control_max_age_s * 1e6)
        self.seen = SeenIds(self.window_us) if replay_guard else None
        if not self.ring.enabled:
            log.warning(
                "tapstream.control commands are not authenticated: anyone who can write the topic "
                "can pause writes, lift fences or release kept checkpoints (set "
                "TAPSTREAM_CONTROL_KEYS)",
                service=service,
            )

    def accept(self, cmd: Mapping[str, Any], now_us: int) -> bool:
        """True if `cmd` may be acted on; else it is logged (WARNING) and counted."""
        if self.acts_on is not None and cmd.get("kind") not in self.acts_on:
            return True
        reason = check(cmd, self.ring, now_us, self.window_us, self.seen)
        if reason is None:
            return True
        kind = str(cmd.get("kind"))
        REJECTED.labels(self.service, kind, reason).inc()
        log.warning(
            "control command ignored",
            service=self.service,
            kind=kind,
            reason=reason,
            group=cmd.get("group"),
            command=cmd.get("id"),
            sender=cmd.get("sender"),
            key_id=cmd.get("key_id"),
        )
        return False

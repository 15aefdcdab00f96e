"""Signed control commands: canonical bytes, signature, policy, replay (core.control_auth)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from tapstream.core.codec import make_codec
from tapstream.core.control_auth import (
    REJECTED,
    SENDERS,
    Keyring,
    SeenIds,
    Verifier,
    canonical,
    check,
    may_be_unsigned,
    sign,
    signature_problem,
)
from tapstream.core.keep import tag_command
from tapstream.core.settings import TapstreamSettings

NOW = 1_764_000_000_000_000
WINDOW = 300_000_000
RING = Keyring({"k1": b"secret-one", "k2": b"secret-two"}, "k2")
OTHER = Keyring({"k2": b"not-the-site-key"}, "k2")


def pause(**over: object) -> dict[str, object]:
    return {
        "id": "c1",
        "group": "g1",
        "kind": "PAUSE",
        "sender": "sm@protected",
        "ts": NOW,
        "checkpoint_id": None,
        "tag": None,
        "volumes": ["b", "a"],
        "args": {"writes": "refuse", "owner": "op-1"},
        **over,
    }


def test_a_signed_command_verifies_with_any_key_of_the_ring() -> None:
    signed = sign(pause(), RING)
    assert signed["key_id"] == "k2" and len(signed["signature"]) == 64
    assert signature_problem(signed, RING) is None
    # rotation: a ring that still holds k2 beside a newer k3 accepts it
    assert signature_problem(signed, Keyring({"k3": b"x", "k2": b"secret-two"}, "k3")) is None


def test_the_signature_survives_avro_and_map_order() -> None:
    codec = make_codec(TapstreamSettings(_env_file=None))  # type: ignore[call-arg]
    signed = sign(pause(args={"owner": "op-1", "writes": "refuse"}), RING)
    _, back = codec.decode(codec.encode("Command", signed))
    assert signature_problem(back, RING) is None
    assert canonical(back) == canonical(sign(pause(), RING))


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "RESUME"},
        {"group": "g2"},
        {"ts": NOW + 1},
        {"id": "c2"},
        {"sender": "x"},
        {"args": {"writes": "allow", "owner": "op-1"}},
        {"args": {"writes": "refuse"}},
        {"volumes": ["a"]},
        {"checkpoint_id": "cp"},
        {"tag": "t"},
        {"key_id": "k1"},
    ],
)
def test_any_change_of_a_signed_field_breaks_the_signature(change: dict[str, object]) -> None:
    altered = {**sign(pause(), RING), **change}
    assert signature_problem(altered, RING) in ("bad_signature",)


def test_unsigned_unknown_key_and_wrong_key_are_told_apart() -> None:
    assert signature_problem(pause(), RING) == "unsigned"
    assert signature_problem(sign(pause(), Keyring({"k9": b"x"}, "k9")), RING) == "unknown_key"
    assert signature_problem(sign(pause(), OTHER), RING) == "bad_signature"
    assert signature_problem({**pause(), "key_id": "k1", "signature": "zz"}, RING) == (
        "bad_signature"
    )


@given(
    st.dictionaries(st.text(), st.text()),
    st.lists(st.text()),
    st.text(),
    st.integers(0, 2**62),
)
def test_canonical_bytes_are_deterministic_and_injective_enough(
    args: dict[str, str], volumes: list[str], group: str, ts: int
) -> None:
    cmd = pause(args=args, volumes=volumes, group=group, ts=ts)
    reordered = pause(args=dict(reversed(list(args.items()))), volumes=volumes, group=group, ts=ts)
    assert canonical(cmd) == canonical(reordered)
    assert signature_problem(sign(cmd, RING), RING) is None
    assert canonical(cmd) != canonical({**cmd, "group": group + "x"})


def test_without_a_signing_key_nothing_is_signed() -> None:
    out = sign(pause(), Keyring())
    assert out["key_id"] is None and out["signature"] is None
    verify_only = Keyring({"k1": b"x"})  # several keys, none chosen: verify, do not sign
    assert sign(pause(), verify_only)["signature"] is None


def test_the_policy_lets_only_a_keeping_tag_go_unsigned() -> None:
    keep = tag_command("g1", "cp", "last-clean", True, "analyzer.x", NOW)
    release = tag_command("g1", "cp", "last-clean", False, "analyzer.x", NOW)
    assert may_be_unsigned(keep) and not may_be_unsigned(release)
    assert check(keep, RING, NOW, WINDOW) is None
    assert check(release, RING, NOW, WINDOW) == "unsigned"
    assert check(sign(release, RING), RING, NOW, WINDOW) is None
    # a keep dated in the future would outrank a later signed release
    assert check({**keep, "ts": NOW + 2 * WINDOW}, RING, NOW, WINDOW) == "future"
    # badly signed is refused even for a kind that may go unsigned
    assert check(sign(keep, OTHER), RING, NOW, WINDOW) == "bad_signature"
    for kind in SENDERS:
        if kind != "CHECKPOINT_TAG":
            assert check(pause(kind=kind), RING, NOW, WINDOW) == "unsigned", kind


def test_no_key_configured_accepts_everything_as_before() -> None:
    assert check(pause(), Keyring(), NOW, WINDOW) is None
    assert check(pause(ts=0), Keyring(), NOW, WINDOW, SeenIds(WINDOW)) is None


def test_replays_are_refused_where_commands_act_once() -> None:
    seen = SeenIds(WINDOW)
    cmd = sign(pause(), RING)
    assert check(cmd, RING, NOW, WINDOW, seen) is None
    assert check(cmd, RING, NOW + 1, WINDOW, seen) == "replayed"
    old = sign(pause(id="c3", ts=NOW - WINDOW - 1), RING)
    assert check(old, RING, NOW, WINDOW, seen) == "stale"
    # a reader without a replay guard (kept checkpoints: idempotent by ts) takes an old command
    assert check(old, RING, NOW, WINDOW) is None
    # ids age out with the window, and an old id is then refused as stale anyway
    assert check(cmd, RING, NOW + 2 * WINDOW, WINDOW, seen) == "stale"


def test_seen_ids_forget_what_the_window_left() -> None:
    seen = SeenIds(10)
    for i in range(1000):
        assert seen.add(str(i), i, i)
    assert len(seen._ids) <= 11


def test_the_verifier_counts_and_the_keyring_comes_from_settings() -> None:
    settings = TapstreamSettings(  # type: ignore[call-arg]
        _env_file=None, control_keys={"k1": SecretStr("secret-one")}
    )
    ring = Keyring.from_settings(settings)
    assert ring.signing == "k1" and ring.keys == {"k1": b"secret-one"}
    v = Verifier(settings, "unit", replay_guard=True)
    before = REJECTED.labels("unit", "PAUSE", "unsigned")._value.get()
    assert not v.accept(pause(), NOW)
    assert REJECTED.labels("unit", "PAUSE", "unsigned")._value.get() == before + 1
    assert v.accept(sign(pause(), ring), NOW)
    assert not v.accept(sign(pause(), ring), NOW)
    assert REJECTED.labels("unit", "PAUSE", "replayed")._value.get() == 1

"""The one CHECKPOINT_TAG reader of the journal and the recovery VDSA: which commands become requests,
decided without a broker."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr

from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.dlq import Poison, PoisonReason
from tapstream.core.keep import tag_command
from tapstream.core.settings import TapstreamSettings
from tapstream.core.tag_follower import TagFollower

SETTINGS = TapstreamSettings(_env_file=None, control_keys={"k1": SecretStr("s" * 32)})  # type: ignore[call-arg]


def record(value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="protected.tapstream.control", partition=0, offset=0, value=value)


def signed(group: str, checkpoint: str, keep: bool) -> bytes:
    cmd = sign(
        tag_command(group, checkpoint, "gold", keep, "cli", now_us()),
        Keyring.from_settings(SETTINGS),
    )
    return make_codec(SETTINGS).encode("Command", cmd)


def test_only_our_groups_accepted_tags_become_requests_and_poison_is_handed_on() -> None:
    poisoned: list[Poison] = []
    follower = TagFollower(SETTINGS, ["g1"], "journal", on_poison=lambda m, p: poisoned.append(p))
    unsigned_release = make_codec(SETTINGS).encode(
        "Command", tag_command("g1", "cp9", None, False, "cli", now_us())
    )
    msgs = [
        record(signed("g1", "cp1", True)),
        record(signed("g2", "cp2", True)),  # another group's
        record(b"\x00garbage"),
        record(unsigned_release),  # a release must be signed
        record(signed("g1", "cp1", False)),
    ]
    got = follower.requests(msgs)  # type: ignore[arg-type]
    assert [(r.group, r.checkpoint_id, r.keep) for r in got] == [
        ("g1", "cp1", True),
        ("g1", "cp1", False),
    ]
    assert [p.reason for p in poisoned] == [PoisonReason.UNDECODABLE]


def test_follows_the_mirrored_control_topic() -> None:
    follower = TagFollower(SETTINGS, ["g1"], "vdsa")
    assert follower.topic == "protected.tapstream.control"
    assert not follower.caught_up.is_set()

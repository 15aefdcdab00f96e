"""Kept checkpoints: parsing CHECKPOINT_TAG, which command wins, and the VDSA's hold decision."""

from __future__ import annotations

import json

from tapstream.core.codec import make_codec
from tapstream.core.keep import Keeps, TagRequest, decide, parse_tag_command, tag_command
from tapstream.core.settings import TapstreamSettings


def req(
    cp: str = "A", tag: str | None = "last-clean", keep: bool = True, ts: int = 1
) -> TagRequest:
    return TagRequest("g1", cp, tag, keep, "", ts, "test")


def test_the_analyzers_command_parses_after_an_avro_round_trip() -> None:
    codec = make_codec(TapstreamSettings())
    analyzer = {
        "id": "x",
        "group": "g1",
        "kind": "CHECKPOINT_TAG",
        "sender": "analyzer.encryption",
        "ts": 7,
        "checkpoint_id": "A",
        "tag": "last-clean",
        "volumes": ["disk0"],
        "args": {"alert_id": "al", "reason": "encryption", "keep": "true", "onset_ts": "5"},
    }
    _, cmd = codec.decode(codec.encode("Command", analyzer))
    r = parse_tag_command(cmd)
    assert r == TagRequest(
        "g1", "A", "last-clean", True, "encryption", 7, "analyzer.encryption", ("disk0",)
    )


def test_cli_commands_and_other_kinds() -> None:
    keep = tag_command("g1", "A", None, True, "cli", 3)
    assert parse_tag_command(keep) == TagRequest(
        "g1", "A", "kept", True, "", 3, "cli"
    )  # default tag
    release = tag_command("g1", "A", None, False, "cli", 4)
    assert parse_tag_command(release) == TagRequest(
        "g1", "A", None, False, "", 4, "cli"
    )  # every tag
    assert parse_tag_command({**keep, "kind": "CHECKPOINT_COMMIT"}) is None
    assert parse_tag_command({**keep, "checkpoint_id": None}) is None


def test_later_command_wins_whatever_the_order_of_arrival() -> None:
    k = Keeps()
    assert k.apply(req(ts=10)) and k.kept("g1", "A")
    assert not k.apply(req(keep=False, ts=5)) and k.kept("g1", "A")  # older release: ignored
    assert k.apply(req(keep=False, ts=11)) and not k.kept("g1", "A")
    assert not k.apply(req(ts=10)) and not k.kept("g1", "A")  # redelivered keep: still released
    assert k.kept_ids("g1") == set() and k.kept_ids("g2") == set()


def test_a_checkpoint_is_kept_while_any_of_its_tags_is_and_release_all_releases_every_tag() -> None:
    k = Keeps()
    k.apply(req(tag="last-clean", ts=1))
    k.apply(req(tag="investigation", ts=2))
    k.apply(req(tag="last-clean", keep=False, ts=3))
    assert k.kept("g1", "A")
    assert k.apply(req(tag=None, keep=False, ts=4)) and not k.kept("g1", "A")
    assert k.apply(req(tag="again", ts=5)) and k.kept_ids("g1") == {"A"}
    assert not k.kept("g1", "B") and not k.kept("g2", "A")


def test_hold_decision() -> None:
    k = Keeps()
    k.apply(req(cp="A"))
    marker = {"id": "A", "ts": 1, "tag": "before-upgrade"}
    other = {"id": "B", "ts": 1, "tag": None}
    write = {"offset": 0, "length": 4096}
    assert decide("Checkpoint", marker, 10, 9, k, "g1") == "apply-and-hold"
    assert (
        decide("Checkpoint", marker, 10, 10, k, "g1") == "hold"
    )  # re-read after a restart: hold again
    assert decide("Checkpoint", marker, 10, 11, k, "g1") == "skip"  # already passed: cannot be kept
    assert decide("Checkpoint", marker, 10, 9, k, "g2") == "apply"  # another group's checkpoint A
    assert decide("Checkpoint", other, 10, 9, k, "g1") == "apply"
    assert decide("Write", write, 10, 9, k, "g1") == "apply"
    assert decide("Write", write, 9, 9, k, "g1") == "skip"
    k.apply(req(cp="A", keep=False, ts=2))
    assert decide("Checkpoint", marker, 10, 10, k, "g1") == "skip"  # released: the replica moves on


def test_the_saved_kept_set_round_trips_and_a_later_release_still_wins() -> None:
    k = Keeps()
    k.apply(req(cp="A", tag="last-clean", ts=1))
    k.apply(req(cp="A", tag="gone", ts=2))
    k.apply(req(cp="A", tag="gone", keep=False, ts=3))
    k.apply(req(cp="B", ts=1))
    k.apply(req(cp="B", tag=None, keep=False, ts=2))
    saved = json.loads(json.dumps(k.dump("g1")))
    assert saved == {"A": {"last-clean": [True, 1]}}
    restored = Keeps()
    restored.load("g1", saved)
    assert restored.kept_ids("g1") == {"A"} and restored.kept_ids("g2") == set()
    restored.apply(
        req(cp="A", tag=None, keep=False, ts=5)
    )  # re-read from the topic after the restart
    assert not restored.kept("g1", "A")

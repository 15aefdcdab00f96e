"""Signed control commands (core.control_auth) against a real tapper, a real recovery VDSA and Kafka:
a forged PAUSE (unsigned, signed with a wrong key, an old one replayed) does not fence, and a forged
release does not let the replica run past a kept checkpoint; both are counted
(tapstream_control_rejected_total). The properly signed commands do act, so the test can fail."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import producer_config
from tapstream.core.keep import tag_command
from tapstream.core.ports import free_port
from tapstream.core.replica import Replica
from tapstream.vdsa.coordinator import create_checkpoint
from tapstream.vdsa.holds import send_tag

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, qemu_write, start_tapper
from .test_tapper_fence import bodies

pytestmark = pytest.mark.integration
SIZE = 4 * 1024 * 1024


def ring(stack) -> Keyring:
    got = Keyring.from_settings(stack.settings)
    assert got.signing is not None, "the stack configures no control key (make up writes one)"
    return got


def wrong_key(stack) -> Keyring:
    """The site's key id with another secret: what a forger who guessed the id would produce."""
    key_id = ring(stack).signing
    assert key_id is not None
    return Keyring({key_id: b"not the site's key"}, key_id)


def command(group: str, kind: str, args: dict[str, str], ts: int | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "group": group,
        "kind": kind,
        "sender": "site-manager@protected",  # what a forger would claim
        "ts": ts if ts is not None else time.time_ns() // 1000,
        "checkpoint_id": None,
        "tag": None,
        "volumes": [],
        "args": args,
    }


def produce(stack, cmd: dict[str, Any]) -> None:
    """Straight onto the protected site's tapstream.control, as anyone with write access could."""
    settings = stack.settings
    p = Producer(producer_config(settings, linger_ms=0))
    value = make_codec(settings).encode("Command", cmd)
    p.produce(settings.topic("control"), value, key=cmd["group"].encode())
    assert p.flush(30) == 0


def rejected(port: int, service: str, kind: str) -> dict[str, float]:
    """tapstream_control_rejected_total of (service, kind) at a process's /metrics, by reason."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tapstream_control_rejected_total{") and (
            f'service="{service}"' in line and f'kind="{kind}"' in line
        ):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def can_write(uri: str, pattern: int) -> bool:
    try:
        qemu_write(uri, 0, pattern, 4096)
        return True
    except AssertionError:
        return False


def writes_of(stack, group: str, pattern: int) -> int:
    return sum(
        1
        for b in bodies(stack, group, "Write")
        if b["length"] == 4096 and b["data"][:1] == bytes([pattern])
    )


def test_a_forged_pause_does_not_fence_and_a_signed_one_does(stack, tmp_path: Path) -> None:
    group = f"sig-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "vol", SIZE)
    port = free_port()
    tapper = start_tapper(
        stack, tmp_path, group, {"vol": vol}, extra_env={"TAPSTREAM_METRICS_PORT": str(port)}
    )
    uri, fence = tapper.uri("vol"), {"writes": "refuse", "owner": "op-forged"}
    try:
        assert can_write(uri, 1)
        produce(stack, command(group, "PAUSE", fence))  # unsigned
        produce(stack, sign(command(group, "PAUSE", fence), wrong_key(stack)))
        produce(stack, sign(command(group, "PAUSE", fence), Keyring({"k0": b"x"}, "k0")))
        old = time.time_ns() // 1000 - 3600 * 10**6  # signed, but an hour old: a replayed copy
        produce(stack, sign(command(group, "PAUSE", fence, ts=old), ring(stack)))
        wait_until(
            "the four forged PAUSEs counted",
            lambda: (
                rejected(port, "tapper", "PAUSE")
                == {"unsigned": 1, "bad_signature": 1, "unknown_key": 1, "stale": 1}
            ),
            30,
        )
        # No effect: writes through qemu-io still succeed and reach Kafka.
        assert can_write(uri, 2)
        wait_until(
            "the write after the forgeries in Kafka", lambda: writes_of(stack, group, 2) == 1, 30
        )
        log = tapper.log.read_text()
        assert "control command ignored" in log and "writes refused" not in log

        signed = sign(
            command(group, "PAUSE", {"writes": "refuse", "owner": "op-real"}), ring(stack)
        )
        produce(stack, signed)
        wait_until("the signed PAUSE fences", lambda: not can_write(uri, 3), 30)
        # Probes before the fence took hold may have written 3s; a write after it never lands.
        assert not can_write(uri, 6)
        assert writes_of(stack, group, 6) == 0
        produce(
            stack,
            sign(command(group, "RESUME", {"writes": "allow", "owner": "op-real"}), ring(stack)),
        )
        wait_until("the signed RESUME lifts it", lambda: can_write(uri, 4), 30)
        produce(stack, signed)  # the same signed PAUSE written again
        wait_until(
            "the replayed PAUSE counted",
            lambda: rejected(port, "tapper", "PAUSE").get("replayed") == 1,
            30,
        )
        assert can_write(uri, 5)
        wait_until("the last write in Kafka", lambda: writes_of(stack, group, 5) == 1, 30)
    finally:
        tapper.stop()


def test_a_forged_release_does_not_free_a_kept_checkpoint(stack, tmp_path: Path) -> None:
    group = f"sig-hold-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "disk0", SIZE)
    replicas = tmp_path / "replicas"
    settings = stack.settings.model_copy(update={"replica_dir": replicas})
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    port = free_port()
    vdsa = start_service(
        stack,
        "tapstream.vdsa",
        tmp_path,
        {
            **groups_env("VDSA", group),
            "TAPSTREAM_SITE": "recovery",
            "TAPSTREAM_REPLICA_DIR": str(replicas),
            "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "5",  # the tag reaches the VDSA before the marker
            "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
            "TAPSTREAM_METRICS_PORT": str(port),
        },
        "vdsa",
    )
    replica = Replica(replicas, group, "disk0")
    vdsa_log = tmp_path / "vdsa.log"
    try:
        qemu_write(tapper.uri("disk0"), 0, 1, 65536)
        a = asyncio.run(create_checkpoint(settings, group, "a"))
        # What an analyzer publishes after an alert: unsigned (it has no key), and only keeps.
        produce(
            stack,
            tag_command(group, a, "last-clean", True, "analyzer.x", time.time_ns() // 1000),
        )
        qemu_write(tapper.uri("disk0"), 65536, 2, 65536)
        asyncio.run(create_checkpoint(settings, group, "b"))
        wait_until(
            "the replica held at A",
            lambda: "replica held at a kept checkpoint" in vdsa_log.read_text(),
            60,
        )
        held = replica.position().seq
        kept = replicas / group / "kept.json"
        assert list(json.loads(kept.read_text())) == [a]

        now = time.time_ns() // 1000
        produce(stack, tag_command(group, a, "last-clean", False, "cli", now))  # unsigned release
        produce(stack, sign(tag_command(group, a, None, False, "cli", now), wrong_key(stack)))
        wait_until(
            "both forged releases counted",
            lambda: rejected(port, "vdsa", "CHECKPOINT_TAG") == {"unsigned": 1, "bad_signature": 1},
            60,
        )
        assert replica.position().seq == held, "a forged release let the replica move on"
        assert list(json.loads(kept.read_text())) == [a]
        assert "kept checkpoint released" not in vdsa_log.read_text()

        # The operator's signed release (`tapstream checkpoint release`) does free it.
        asyncio.run(send_tag(settings, group, a, "last-clean", False, sender="cli"))
        wait_until("the replica past A", lambda: replica.position().seq > held, 60)
        assert "kept checkpoint released" in vdsa_log.read_text()
    finally:
        tapper.stop()
        stop(vdsa)


def test_no_key_means_no_check_and_a_warning(stack, tmp_path: Path) -> None:
    """An existing deployment without keys keeps working, and is told it is not protected."""
    group = f"sig-none-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "vol", SIZE)
    # The stack's settings without the key (a dict setting from the env file is merged with, not
    # replaced by, one from the environment: an empty one would not remove it).
    local = Path(stack.env["TAPSTREAM_ENV_FILE"]).read_text().splitlines()
    keyless = tmp_path / "keyless.env"
    keyless.write_text("".join(f"{x}\n" for x in local if not x.startswith("TAPSTREAM_CONTROL_")))
    env = {
        "TAPSTREAM_ENV_FILE": str(keyless),
        "TAPSTREAM_CONTROL_KEYS": "{}",
        "TAPSTREAM_CONTROL_KEY_ID": "",
    }
    tapper = start_tapper(stack, tmp_path, group, {"vol": vol}, extra_env=env)
    try:
        produce(stack, command(group, "PAUSE", {"writes": "refuse", "owner": "op"}))
        wait_until(
            "an unsigned PAUSE fences, as before", lambda: not can_write(tapper.uri("vol"), 1), 30
        )
        assert "control commands are not authenticated" in tapper.log.read_text()
    finally:
        tapper.stop()

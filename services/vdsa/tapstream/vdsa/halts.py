"""What the recovery VDSA does when a volume halts: say it loudly, and ask for the cure.

A halted volume's replica stays exact at its last good event. Three things make that visible and
heal it: the gauge `tapstream_volume_halted{group,volume,reason}`, a CRITICAL `Alert` on the
site's tapstream.alerts (and the reason in the volume's Progress records, which `tapstream status`
shows), and a RESYNC command to the protected site's tappers asking for the whole volume. The
tapper answers with a DELTA sync of every region; the contract (core.contract) lets the volume
move on from that sync's SyncStart. The request is repeated while the volume stays halted.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tapstream.core.clock import now_us
from tapstream.core.codec import Codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import AsyncProducer, producer_config
from tapstream.core.logging import get_logger
from tapstream.vdsa import metrics
from tapstream.vdsa.settings import VdsaSettings

log = get_logger("tapstream.vdsa.halts")
HALT_NS = uuid.UUID("1f4c0a52-6f0e-4d53-a7f4-3c2f0b1e9d11")


def heal_command(group: str, volume: str) -> str:
    return f"tapstream volume resync {group} {volume}"


def resync_command(group: str, volume: str, sender: str, reason: str) -> dict[str, Any]:
    """A RESYNC Command asking the tappers of `group` to send all of `volume` again."""
    return {
        "id": str(uuid.uuid4()),
        "group": group,
        "kind": "RESYNC",
        "sender": sender,
        "ts": now_us(),
        "checkpoint_id": None,
        "tag": None,
        "volumes": [volume],
        "args": {volume: "all", "reason": reason},
    }


class HaltReporter:
    def __init__(self, settings: VdsaSettings, codec: Codec, local: AsyncProducer) -> None:
        self.s = settings
        self.codec = codec
        self.local = local  # this site's producer (alerts)
        self._protected: AsyncProducer | None = None
        self._asked: dict[tuple[str, str], float] = {}  # when a resync was last requested

    async def stop(self) -> None:
        if self._protected is not None:
            await self._protected.stop(timeout=5)

    def halted(self, group: str, volume: str, halt: dict[str, Any], offset: int) -> None:
        """A volume just halted: gauge, log, alert, resync request."""
        metrics.HALTED.labels(group, volume, halt["reason"]).set(1)
        log.error(
            "volume halted: its replica stays at the last good event until a resync",
            group=group,
            volume=volume,
            reason=halt["reason"],
            detail=halt["detail"],
            offset=offset,
            heal=heal_command(group, volume),
        )
        now = now_us()
        alert = {
            "id": str(uuid.uuid5(HALT_NS, f"{group}/{volume}/{halt['seq']}/{halt['reason']}")),
            "kind": "halt",
            "group": group,
            "volume": volume,
            "onset_ts": now,
            "detected_ts": now,
            "severity": "CRITICAL",
            "score": 1.0,
            "encrypted_share": 0.0,
            "last_clean_checkpoint": None,
            "message": f"replica of {group}/{volume} halted ({halt['reason']}): {halt['detail']}. "
            f"A resync was requested; to ask again: {heal_command(group, volume)}",
            "details": {"reason": halt["reason"], "seq": str(halt["seq"]), "offset": str(offset)},
        }
        self.local.produce_nowait(
            self.s.topic("alerts"), self.codec.encode("Alert", alert), key=volume.encode()
        ).add_done_callback(_log_failure)
        self._asked.pop((group, volume), None)
        self.ask_resync(group, volume, halt["reason"])

    def healed(self, group: str, volume: str, reason: str) -> None:
        metrics.HALTED.labels(group, volume, reason).set(0)
        self._asked.pop((group, volume), None)
        log.warning("volume healed by a sync of the whole volume", group=group, volume=volume)

    def forget(self, group: str, volume: str, reason: str) -> None:
        """Another VDSA process applies the volume now: its gauge and resync requests are that
        process's (this one's gauge goes to 0, so a sum over processes stays right)."""
        metrics.HALTED.labels(group, volume, reason).set(0)
        self._asked.pop((group, volume), None)

    def still_halted(self, group: str, volume: str, halt: dict[str, Any]) -> None:
        """Called periodically: keeps the gauge up (after a restart too) and asks again."""
        metrics.HALTED.labels(group, volume, halt["reason"]).set(1)
        last = self._asked.get((group, volume))
        if last is None or time.monotonic() - last > self.s.vdsa_resync_retry_s:
            self.ask_resync(group, volume, halt["reason"])

    def ask_resync(self, group: str, volume: str, reason: str) -> None:
        if not self.s.vdsa_auto_resync:
            return
        self._asked[(group, volume)] = time.monotonic()
        if self._protected is None:
            # The tappers read tapstream.control on the protected cluster.
            self._protected = AsyncProducer(
                producer_config(self.s, self.s.protected_bootstrap, linger_ms=0)
            )
            self._protected.start_now()
        command = resync_command(group, volume, f"vdsa@{self.s.site}", reason)
        value = self.codec.encode("Command", sign(command, Keyring.from_settings(self.s)))
        log.warning("resync of the whole volume requested", group=group, volume=volume)
        self._protected.produce_nowait(
            self.s.topic("control"), value, key=group.encode()
        ).add_done_callback(_log_failure)


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not publish", error=repr(fut.exception()))

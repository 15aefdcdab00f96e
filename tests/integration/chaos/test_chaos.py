"""Fault scenarios on the chaos stack (issue 10, items 4 and 5), each under a verifying fio load
through a sync-mode tapper, each ending with a byte-for-byte comparison:

- the leader broker of the write topic's partition SIGKILLed mid-load, restarted later;
- the link between the sites cut (toxiproxy disabled), then healed;
- a WAN between the sites: 50 ms each way and a 100 Mbit/s cap.

Each writes its row to bench/results/faults.json (`make chaos` prints them)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.replay import replay_volume
from tapstream.localstack import faults

from ..services_harness import wait_until
from ..tapper_harness import blank_volume, images_equal, replay, start_tapper
from .conftest import REPO, Chaos
from .load import (
    MIB,
    LagSampler,
    differing_blocks,
    finish_fio,
    partition_state,
    records,
    start_fio,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SIZE = 64 * MIB
RESULTS = REPO / "bench" / "results" / "faults.json"


def test_leader_broker_sigkill_under_sync_writes(chaos: Chaos, tmp_path: Path) -> None:
    """Item 4: with RF 3 / min ISR 2 a sync-mode write stalls for the election, never fails, and
    nothing acknowledged is missing from the topic."""
    stack, group = chaos.running, f"leader-{os.urandom(3).hex()}"
    vol = blank_volume(tmp_path, "disk0", SIZE)
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    protected = client_config(stack.settings, stack.protected_bootstrap)
    topic = stack.settings.topic(f"writes.{group}")
    fio = start_fio(tapper.uri("disk0"), tmp_path, size_mib=24, rate="1m", seed=11)
    try:
        wait_until("writes reaching the protected topic", lambda: records(protected, topic) > 20)
        leader, replicas, isr = partition_state(protected, topic)
        assert len(replicas) == 3 and len(isr) == 3, (replicas, isr)  # RF 3 from the broker default
        victim = chaos.broker(leader)
        pid = victim.pid()
        assert pid is not None and fio.poll() is None, "the load ended before the fault"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        new_leader = wait_until(
            "a new leader elected",
            lambda: (st := partition_state(protected, topic))[0] not in (leader, -1) and st[0],
            timeout=60,
        )
        election_s = time.monotonic() - killed
        before = records(protected, topic)
        # Writes go on against two brokers (min ISR 2) before the victim comes back.
        wait_until(
            "writes acknowledged on the new leader", lambda: records(protected, topic) > before
        )
        chaos.stack.up()  # restarts the killed broker, waits until all three answer
        wait_until(
            "the restarted broker back in sync",
            lambda: len(partition_state(protected, topic)[2]) == 3,
            timeout=120,
        )
        recovered_s = time.monotonic() - killed
        result = finish_fio(fio, timeout=300)
        assert tapper.stop() == 0
        out = tmp_path / "replayed.img"
        replayed = replay(stack, group, "disk0", out, SIZE)
        lost = differing_blocks(vol, out)
        faults.record(
            {"scenario": "broker-leader-sigkill", "fault": f"SIGKILL leader broker {leader} "
             f"(of 3, RF 3, min ISR 2), restarted", "load": "fio randwrite 4-64k 1 MiB/s verify "
             "crc32c, sync mode", "acked": result.writes, "lost": lost,
             "recover_s": round(recovered_s, 1), "election_s": round(election_s, 1),
             "stall_max_s": round(result.max_latency_s, 2), "new_leader": new_leader,
             "events": replayed.last_seq},
            RESULTS,
        )  # fmt: skip
        assert result.verify_errors == 0
        assert lost == 0
        images_equal(vol, out)
    finally:
        if fio.poll() is None:
            fio.kill()
        if tapper.proc.poll() is None:
            tapper.stop()
        if any(n.pid() is None for n in chaos.stack.brokers["protected"]):
            chaos.stack.up()


def _link_scenario(
    chaos: Chaos,
    tmp_path: Path,
    name: str,
    fault: str,
    load: tuple[int, str],
    inject: Callable[[], None],
    hold: Callable[[str], float | None],
) -> None:
    """fio through the tapper while `inject()` breaks the link and `hold(write topic)` keeps it
    broken, then mends it and says when (None: the fault lasts the whole load); a sampler measures
    the lag meanwhile. Then the recovery site must catch up and its replay equal the volume."""
    stack, group = chaos.running, f"{name}-{os.urandom(3).hex()}"
    vol = blank_volume(tmp_path, "disk0", SIZE)
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    s = stack.settings
    protected = client_config(s, s.protected_bootstrap)
    recovery = client_config(s, s.recovery_bootstrap)
    topic = s.topic(f"writes.{group}")
    mirrored = s.mirrored(topic)
    size_mib, rate = load
    fio = start_fio(tapper.uri("disk0"), tmp_path, size_mib=size_mib, rate=rate, seed=23)
    try:
        with LagSampler(protected, recovery, topic, mirrored) as sampler:
            wait_until(
                "the load crossing to the recovery site", lambda: records(recovery, mirrored)
            )
            assert fio.poll() is None, "the load ended before the fault"
            mm2_pid = chaos.stack.mirrormaker.pid()
            inject()
            healed = hold(topic)
            healed_wall = time.time()
            result = finish_fio(fio, timeout=600)
            load_end = time.monotonic()
            assert tapper.stop() == 0
            end = records(protected, topic)
            wait_until(
                "the recovery site caught up",
                lambda: records(recovery, mirrored) >= end,
                timeout=300,
                interval=0.5,
            )
            caught_up = time.monotonic()
        # Both directions replicate again (heartbeats emitted after the fault cross each way),
        # without MirrorMaker 2 being restarted.
        mm2 = chaos.stack.mirrormaker
        mm2.wait_ready(s, healed_wall, timeout_s=90)
        assert mm2.pid() == mm2_pid
        since = healed if healed is not None else load_end
        back = sampler.back_to_seconds(since)
        out = tmp_path / "mirrored.img"
        replay_volume(recovery, mirrored, "disk0", str(out), SIZE, make_codec(s))
        lost = differing_blocks(vol, out)
        faults.record(
            {"scenario": name, "fault": fault, "load": f"fio randwrite 4-64k {size_mib} MiB at "
             f"{rate}/s, verify crc32c, sync mode", "acked": result.writes, "lost": lost,
             "recover_s": round(back if back is not None else caught_up - since, 1),
             "rpo_max_s": round(sampler.max_rpo_s, 1), "lag_max": sampler.max_records,
             "stall_max_s": round(result.max_latency_s, 2), "events": end},
            RESULTS,
        )  # fmt: skip
        assert result.verify_errors == 0
        assert lost == 0
        images_equal(vol, out)
    finally:
        if fio.poll() is None:
            fio.kill()
        if tapper.proc.poll() is None:
            tapper.stop()
        chaos.proxy.reset()


CUT_S = 40.0
# What MirrorMaker 2 had fetched before the cut may still land at the recovery site just after it.
IN_FLIGHT_S = 5.0


def test_link_cut_between_sites(chaos: Chaos, tmp_path: Path) -> None:
    """Item 5: the link down for 40 s under load. The protected side keeps acknowledging while
    nothing crosses; once the link is back the recovery side catches up and replays exactly."""
    s = chaos.running.settings
    protected = client_config(s, s.protected_bootstrap)
    recovery = client_config(s, s.recovery_bootstrap)
    at: list[float] = []

    def cut() -> None:
        for link in chaos.links:
            chaos.proxy.set_enabled(link, False)
        at.append(time.monotonic())

    def hold(topic: str) -> float:
        time.sleep(IN_FLIGHT_S)
        crossed, written = records(recovery, s.mirrored(topic)), records(protected, topic)
        # The fault's length, not a readiness wait.
        time.sleep(max(0.0, at[0] + CUT_S - time.monotonic()))
        # The cut is real (nothing crossed) and the protected side went on acknowledging.
        assert records(recovery, s.mirrored(topic)) == crossed
        assert records(protected, topic) > written
        for link in chaos.links:
            chaos.proxy.set_enabled(link, True)
        return time.monotonic()

    _link_scenario(
        chaos, tmp_path, "link-cut", f"link protected<->recovery down {CUT_S:.0f} s (toxiproxy "
        "disabled), then up", load=(64, "1m"), inject=cut, hold=hold,
    )  # fmt: skip


def test_wan_latency_and_bandwidth(chaos: Chaos, tmp_path: Path) -> None:
    """Item 5: 50 ms each way and 100 Mbit/s between the sites: nothing lost, replay exact."""

    def wan() -> None:
        for link in chaos.links:
            for stream in ("upstream", "downstream"):
                chaos.proxy.add_toxic(link, "latency", stream, {"latency": 50, "jitter": 0})
                # toxiproxy's rate is in KB/s: 100 Mbit/s = 12500 KB/s.
                chaos.proxy.add_toxic(link, "bandwidth", stream, {"rate": 12500})
        applied = chaos.proxy.proxies()
        assert all(len(applied[link]["toxics"]) == 4 for link in chaos.links), applied

    _link_scenario(
        chaos, tmp_path, "wan-50ms-100mbit", "WAN: +50 ms each way, 100 Mbit/s cap (toxiproxy)",
        load=(32, "2m"), inject=wan, hold=lambda _topic: None,
    )  # fmt: skip

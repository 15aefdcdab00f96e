"""The local-fault state machine: fail, refuse, probe with back-off, recover (no I/O)."""

from __future__ import annotations

import errno

from tapstream.tapper.local_health import LocalHealth, merge


def test_merge_sorts_coalesces_and_drops_empty() -> None:
    assert merge([(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]) == [(0, 8), (10, 30)]


def test_healthy_volume_refuses_nothing() -> None:
    h = LocalHealth()
    assert h.refusal() is None
    assert not h.probe_due(1e9)


def test_first_error_fails_the_volume_later_ones_only_add_ranges() -> None:
    h = LocalHealth(interval_s=2)
    assert h.fail(100.0, "write", errno.EIO, "boom", [(0, 4096)])
    assert not h.fail(101.0, "flush", errno.EIO, "again", [(8192, 12288)])
    assert (h.op, h.since, h.errors) == ("write", 100.0, 2)
    assert h.ranges == [(0, 4096), (8192, 12288)]
    err, message = h.refusal() or (0, "")
    assert err == errno.EIO and "local write" in message


def test_enospc_is_refused_as_enospc() -> None:
    h = LocalHealth()
    h.fail(0.0, "write", errno.ENOSPC, "full", [])
    assert (h.refusal() or (0, ""))[0] == errno.ENOSPC


def test_probe_backs_off_until_it_succeeds_then_hands_back_the_ranges() -> None:
    h = LocalHealth(interval_s=2, max_interval_s=5)
    h.fail(0.0, "write", errno.EIO, "boom", [(0, 10)])
    assert not h.probe_due(1.9) and h.probe_due(2.0)
    assert h.probe_started() == [(0, 10)]
    assert not h.probe_due(100.0)  # one probe at a time
    assert h.probe_done(2.0, ok=False) is None
    assert h.failed and not h.probe_due(5.9) and h.probe_due(6.0)  # 4 s later
    h.probe_started()
    h.probe_done(6.0, ok=False)
    assert not h.probe_due(10.9) and h.probe_due(11.0)  # capped at 5 s
    h.probe_started()
    assert h.probe_done(11.0, ok=True) == [(0, 10)]
    assert not h.failed and h.refusal() is None and h.ranges == []


def test_an_error_during_the_probe_makes_it_fail() -> None:
    h = LocalHealth(interval_s=1)
    h.fail(0.0, "write", errno.EIO, "boom", [(0, 10)])
    h.probe_started()
    h.fail(0.5, "flush", errno.EIO, "late fdatasync", [(20, 30)])
    assert h.probe_done(1.0, ok=True) is None
    assert h.failed and h.ranges == [(0, 10), (20, 30)]


def test_probe_now_skips_the_wait() -> None:
    h = LocalHealth(interval_s=30)
    h.fail(0.0, "flush", errno.EIO, "boom", [])
    assert not h.probe_due(1.0)
    h.probe_now()
    assert h.probe_due(1.0)

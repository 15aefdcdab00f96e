"""The console's view-model: what the pages compute from the API's data (pure, no browser)."""

from __future__ import annotations

from tapstream.site_manager.console import views
from tapstream.site_manager.console.telemetry import BUCKET_S, RpoHistory

NOW = 1_800_000_000.0


def report(rpo: float, age_s: float, source: str = "replicator", volume: str = "*") -> dict:
    return {"group": "g", "source": source, "volume": volume, "rpo_seconds": rpo,
            "ts": int((NOW - age_s) * 1e6)}  # fmt: skip


def test_live_rpo_is_the_replicators_fresh_report_and_red_over_target() -> None:
    rpo = views.live_rpo([report(2.0, 1), report(7.5, 3, source="replicator2")], 5.0, NOW)
    assert (rpo.seconds, rpo.level, rpo.text) == (2.0, "ok", "2.0 s")
    assert views.live_rpo([report(7.5, 1)], 5.0, NOW).level == "over"


def test_the_applying_vdsas_held_back_age_is_not_the_rpo() -> None:
    rpo = views.live_rpo([report(0.2, 1), report(90.0, 1, "vdsa", "d0")], 5.0, NOW)
    assert rpo.seconds == 0.2
    assert views.live_rpo([report(90.0, 1, "vdsa", "d0")], 5.0, NOW).level == "unknown"


def test_live_rpo_of_stale_reports_is_unknown_not_ok() -> None:
    rpo = views.live_rpo([report(0.5, 120)], 5.0, NOW)
    assert rpo.seconds is None and rpo.level == "unknown" and rpo.text == "—"
    assert rpo.as_of_us == int((NOW - 120) * 1e6)
    assert views.live_rpo([], 5.0, NOW).as_of_us == 0


def test_rpo_chart_spans_the_hour_and_marks_the_target() -> None:
    chart = views.rpo_chart([(NOW - 3600, 1.0), (NOW - 7200, 99.0), (NOW, 2.0)], 4.0, NOW)
    xs = [float(p.split(",")[0]) for p in chart.points.split()]
    assert xs == [0.0, chart.width]  # the sample older than the hour is left out
    assert chart.y_max_s == 5.0 and not chart.over  # 1.25 x the target: the target line shows
    assert chart.target_y == chart.height - 4.0 / 5.0 * chart.height
    assert views.rpo_chart([(NOW - 10, 9.0)], 4.0, NOW).over
    assert views.rpo_chart([], 4.0, NOW).points == ""
    assert chart.ticks[0][1] == "-60 min" and chart.ticks[-1] == (chart.width, "now")


def test_timeline_keeps_special_checkpoints_and_thins_automatic_ones() -> None:
    cps = [{"id": f"a{i:03}", "ts": int((NOW - 3000 + i) * 1e6), "tag": ""} for i in range(500)]
    cps += [
        {"id": "t1", "ts": int((NOW - 1800) * 1e6), "tag": "before-upgrade"},
        {"id": "k1", "ts": int((NOW - 900) * 1e6), "tag": "", "kept": True},
        {"id": "old", "ts": int((NOW - 7200) * 1e6), "tag": "too-old"},
    ]
    marks = views.timeline(cps, NOW, last_clean="a499", limit=50)
    kinds = {m.id: m.kind for m in marks}
    assert kinds["t1"] == "tagged" and kinds["k1"] == "kept" and kinds["a499"] == "clean"
    assert "old" not in kinds and len(marks) <= 50
    assert marks == sorted(marks, key=lambda m: m.x_pct)
    assert next(m for m in marks if m.id == "t1").x_pct == 50.0


def test_journal_window_runs_from_the_oldest_restorable_checkpoint() -> None:
    cps = [{"id": "a", "ts": 10, "restorable": False}, {"id": "b", "ts": 20, "restorable": True},
           {"id": "c", "ts": 30, "restorable": True}]  # fmt: skip
    assert views.journal_window(cps) == (20, 30)
    assert views.journal_window([]) == (None, None)


def group(status: str, test: dict | None = None) -> dict:
    return {"name": "g", "status": status, "source_site": "protected", "target_site": "recovery",
            "failover_test": test}  # fmt: skip


def test_actions_follow_the_state_and_name_the_site_that_runs_them() -> None:
    acts = {a.kind: a for a in views.actions(group("protecting"))}
    assert list(acts) == ["failover-test", "move", "failover"]
    assert acts["failover"].danger and acts["failover"].runs_at == "recovery"
    stop = views.actions(group("protecting", {"checkpoint_id": "x"}))[0]
    assert (stop.kind, stop.method) == ("failover-test-stop", "DELETE")
    assert [(a.kind, a.runs_at) for a in views.actions(group("failed_over"))] == [
        ("reverse", "protected")
    ]
    assert [a.kind for a in views.actions(group("reverse_protecting"))] == ["failback"]
    assert views.actions(group("failing_over")) == []


def test_api_route_is_the_rest_route_the_role_check_uses() -> None:
    assert views.api_route("move") == ("POST", "/groups/{name}/move")
    assert views.api_route("failover-test-stop") == ("DELETE", "/groups/{name}/failover-test")


def test_next_steps_puts_the_error_first_and_says_what_to_do() -> None:
    failed = views.next_steps({"kind": "move", "status": "failed", "error": "tapper down."})
    assert failed.startswith("tapper down.") and "start the operation again" in failed
    assert "Reverse" in views.next_steps({"kind": "failover", "status": "succeeded"})
    stop = {"kind": "failover-test", "status": "succeeded", "params": {"action": "stop"}}
    assert "exports are gone" in views.next_steps(stop)
    res = {"checkpoint": "c", "export.d0": "nbd://h:1/d0"}
    assert views.exports_of(res) == {"d0": "nbd://h:1/d0"}


def test_alerts_newest_first_only_known_groups_and_last_clean() -> None:
    alerts = [
        {"group": "g", "detected_ts": 1, "encrypted_share": 0.5, "last_clean_checkpoint": "c1"},
        {"group": "g", "detected_ts": 3, "encrypted_share": 0.91, "last_clean_checkpoint": None},
        {"group": "h", "detected_ts": 2, "encrypted_share": 1.0},
    ]
    rows = views.alert_rows(alerts, {"g"})
    assert [r["detected_ts"] for r in rows] == [3, 1] and rows[0]["share_pct"] == "91 %"
    assert views.last_clean(alerts, "g") == "c1" and views.last_clean(alerts, "h") is None


def test_durations_and_sizes_read_well() -> None:
    assert [views.duration(s) for s in (None, 1.23, 65, 3725)] == [
        "—", "1.2 s", "1 min 05 s", "1 h 02 min"
    ]  # fmt: skip
    assert [views.size(n) for n in (0, 512, 16 * 1024 * 1024)] == ["—", "512 B", "16.0 MiB"]


def test_rpo_history_buckets_the_worst_and_forgets_after_the_window() -> None:
    h = RpoHistory(window_s=60)
    t0 = NOW - NOW % BUCKET_S
    for dt, rpo, src in ((0, 1.0, "replicator"), (1, 3.0, "replicator"), (2, 50.0, "vdsa"),
                         (BUCKET_S, 0.5, "replicator")):  # fmt: skip
        h.add({"group": "g", "source": src, "volume": "d0", "rpo_seconds": rpo,
               "ts": int((t0 + dt) * 1e6)})  # fmt: skip
    assert h.samples("g") == [(t0, 3.0), (t0 + BUCKET_S, 0.5)]  # the worst; no VDSA figure
    assert {r["source"]: r["rpo_seconds"] for r in h.reports("g")} == {
        "replicator": 0.5, "vdsa": 50.0
    }  # fmt: skip
    h.add({"group": "g", "source": "replicator", "volume": "d0", "rpo_seconds": 9.0,
           "ts": int((t0 + 1) * 1e6)})  # fmt: skip  # older than the newest: ignored
    assert {r["source"]: r["rpo_seconds"] for r in h.reports("g")}["replicator"] == 0.5
    h.add({"group": "g", "source": "replicator", "volume": "d0", "rpo_seconds": 1.0,
           "ts": int((t0 + 120) * 1e6)})  # fmt: skip
    assert h.samples("g") == [(t0 + 120, 1.0)]


def test_checkpoint_rows_keep_the_ones_a_person_recovers_to() -> None:
    cps = [{"id": "tagged", "tag": "before-upgrade"}, {"id": "clean"}, {"id": "kept", "kept": True}]
    cps += [{"id": f"a{i}"} for i in range(20)]
    rows = [cp["id"] for cp in views.checkpoint_rows(cps, last_clean="clean", newest=3)]
    assert rows == ["a19", "a18", "a17", "kept", "clean", "tagged"]

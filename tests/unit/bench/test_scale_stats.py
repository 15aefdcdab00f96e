"""The scale bench's arithmetic: percentiles, samples by label, time lags from sampled counts, rates
and where a series of points bends."""

from __future__ import annotations

import zlib

import pytest
from bench import scale_stats as st


def test_percentile_interpolates_between_ranks_and_has_no_value_without_samples() -> None:
    assert st.percentile([], 50) is None
    assert st.percentile([7.0], 99) == 7.0
    assert st.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert st.percentile(range(101), 99) == 99.0
    assert st.percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_per_volume_takes_each_volumes_percentiles_then_the_median_and_the_worst() -> None:
    samples = {"a": [0.1] * 98 + [5.0] * 2, "b": [0.2] * 100, "c": [0.3] * 100, "idle": []}
    got = st.per_volume(samples)
    assert got["volumes"] == 3
    assert got["p50_median"] == pytest.approx(0.2)
    assert got["p99_max_volume"] == "a"
    assert got["p99_max"] == 5.0  # two slow samples in a hundred are its p99
    assert got["p99_median"] == pytest.approx(0.3)
    assert st.per_volume({}) == {"volumes": 0}


METRICS = "\n".join(
    [
        "# HELP tapstream_vdsa_applied_seq Last seq applied to the replica",
        "# TYPE tapstream_vdsa_applied_seq gauge",
        'tapstream_vdsa_applied_seq{group="g",volume="v000"} 120.0',
        'tapstream_vdsa_applied_seq{group="g",volume="v001"} 7.0',
        'tapstream_vdsa_applied_seq{group="h",volume="v001"} 3.0',
        'tapstream_vdsa_applied_seq_other{group="g",volume="v000"} 99.0',
        'tapstream_vdsa_applied_events_total{group="g",volume="v000"} 120.0',
        'tapstream_vdsa_applied_events_total{group="g",volume="v001"} 7.0',
        "tapstream_tapper_inflight_requests 4.0",
        'tapstream_tapper_rpo_seconds{volume="a\\"b"} 0.25',
    ]
)


def test_by_label_sums_per_label_value_and_ignores_longer_names() -> None:
    assert st.by_label(METRICS, "tapstream_vdsa_applied_seq", "volume") == {
        "v000": 120.0,
        "v001": 10.0,
    }
    assert st.by_label(METRICS, "tapstream_tapper_rpo_seconds", "volume") == {'a\\"b': 0.25}
    assert st.by_label(METRICS, "tapstream_tapper_inflight_requests", "volume") == {}


def test_total_sums_every_sample_or_says_none() -> None:
    assert st.total(METRICS, "tapstream_vdsa_applied_events_total") == 127.0
    assert st.total(METRICS, "tapstream_tapper_inflight_requests") == 4.0
    assert st.total(METRICS, "tapstream_journal_indexed_events_total") is None


def test_partition_is_the_crc32_of_the_key_like_librdkafkas_default_partitioner() -> None:
    assert st.partition_of("v000", 1) == 0
    assert st.partition_of("v007", 64) == zlib.crc32(b"v007") % 64
    assert {st.partition_of(f"v{i:03d}", 8) for i in range(64)} == set(range(8))


# A head that publishes 10 items a second from t=100: 0 at t=100, 10 at 101, ..., 50 at 105.
HEAD = [(100.0 + i, 10.0 * i) for i in range(6)]


def test_time_lag_is_the_age_of_the_first_item_the_consumer_has_not_got() -> None:
    # At t=105 a consumer at 20 waits for item 21, published at 102.1 (between 102 and 103).
    assert st.time_lag(HEAD, 105.0, 20) == pytest.approx(2.9)
    assert st.time_lag(HEAD, 105.0, 25) == pytest.approx(2.4)
    # A consumer with everything the head shows has no lag.
    assert st.time_lag(HEAD, 105.0, 50) == 0.0
    assert st.time_lag(HEAD, 105.0, 60) == 0.0
    # Never negative: a consumer read before the head moved on.
    assert st.time_lag(HEAD, 102.0, 25) == 0.0


def test_time_lag_of_an_item_older_than_the_first_sample_is_a_lower_bound() -> None:
    head = [(100.0, 30.0), (101.0, 40.0)]
    assert st.time_lag(head, 104.0, 5) == 4.0
    assert st.time_lag([], 104.0, 5) == 0.0


def test_time_lag_of_a_stalled_head_dates_the_item_to_when_it_appeared() -> None:
    head = [(100.0, 0.0), (101.0, 10.0), (102.0, 10.0), (103.0, 10.0)]
    assert st.time_lag(head, 103.0, 9) == pytest.approx(2.0)  # item 10 appeared at 101


def test_value_at_and_rate_interpolate_inside_and_hold_outside() -> None:
    assert st.value_at(HEAD, 102.5) == pytest.approx(25.0)
    assert st.value_at(HEAD, 50.0) == 0.0
    assert st.value_at(HEAD, 200.0) == 50.0
    assert st.value_at([], 1.0) == 0.0
    assert st.rate(HEAD, 101.0, 104.0) == pytest.approx(10.0)
    assert st.rate(HEAD, 104.0, 104.0) == 0.0


def test_keeps_up_is_the_share_consumed_of_what_was_produced() -> None:
    assert st.keeps_up(100.0, 90.0) == 0.9
    assert st.keeps_up(100.0, 130.0) == 1.3  # caught up on a backlog
    assert st.keeps_up(0.0, 0.0) is None


def point(n: int, tappers: int, mbps: float, **extra: object) -> dict[str, object]:
    return {
        "n": n,
        "tappers": tappers,
        "write_mbps": mbps,
        "write_ratio": mbps / (2.0 * n),
        "mirror": {"keeps_up": 1.0, "lag_end_s": 0.1},
        "journal": {"keeps_up": 1.0, "lag_end_s": 0.2},
        "vdsa": {"keeps_up": 1.0, "lag_end_s": 0.3},
        "rpo_recovery_s": {"p99_max": 0.5},
        "cpu_s": {"tapper": 30.0, "kafka-recovery": 15.0, "vdsa": 6.0, "fio": 1.0},
        "cpu_busy_pct": 97.0,
        "window_s": 30.0,
        **extra,
    }


def test_a_point_that_scaled_gives_no_reason() -> None:
    assert st.why_bent(point(8, 1, 16.0), point(1, 1, 2.0)) == []


def test_a_point_bends_on_rate_on_a_consumer_falling_behind_on_rpo_and_on_a_flat_aggregate() -> (
    None
):
    slow = point(
        32,
        1,
        17.0,
        vdsa={"keeps_up": 0.6, "lag_end_s": 12.0},
        journal={"keeps_up": 0.7, "lag_end_s": 1.0},  # behind, but not by much yet: not a reason
        rpo_recovery_s={"p99_max": 3.5},
    )
    reasons = st.why_bent(slow, point(8, 1, 16.0))
    assert len(reasons) == 4
    assert "writers got 27%" in reasons[0]
    assert "the VDSA got through 60%" in reasons[1]
    assert "RPO p99 3.5 s" in reasons[2]
    assert "stopped growing" in reasons[3]


def test_a_failed_mirrormaker_task_is_a_reason_and_says_when_it_ran_out_of_heap() -> None:
    log = [
        "[2026-12-02 07:26:19,788] ERROR Failure during poll. java.lang.OutOfMemoryError: Java heap",
        "[2026-12-02 07:26:19,803] ERROR WorkerSourceTask{id=MirrorSourceConnector-0} Task threw an "
        "uncaught and unrecoverable exception.",
    ]
    reasons = st.why_bent(point(64, 4, 128.0, mirrormaker_task_failures=log), None)
    assert reasons == [
        "a MirrorMaker 2 task failed (Java heap space): its partitions stay unmirrored until its "
        "tasks are reconfigured"
    ]


def test_bends_names_the_first_n_past_the_knee_per_tapper_count_and_the_busiest_processes() -> None:
    points = [
        point(1, 1, 2.0),
        point(8, 1, 16.0),
        point(32, 1, 40.0),
        point(8, 4, 16.0),
        point(32, 4, 64.0),
    ]
    one, four = st.bends(points)
    assert one["tappers"] == 1 and one["bends_at_n"] == 32
    assert one["peak_write_mbps"] == 40.0 and one["peak_at_n"] == 32
    assert one["cores_by_process"] == "tapper 1.00, kafka-recovery 0.50, vdsa 0.20"
    assert four["bends_at_n"] is None and four["reasons"] == []

"""The bench's readings of a server from outside: /proc CPU and Prometheus gauges."""

from __future__ import annotations

import os
import time

from bench import server_stats


def test_cpu_counts_user_and_system_time_of_a_command_with_spaces_and_parentheses() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    line = f"1234 (evil) (name) {' '.join(fields)}\n"
    assert server_stats.parse_cpu(line) == 300 / server_stats.TICKS


def test_cpu_of_this_process_grows_while_it_burns_cpu() -> None:
    before = server_stats.cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert server_stats.cpu_seconds(os.getpid()) - before >= 0.1


def test_gauge_sums_every_label_set_and_ignores_longer_names() -> None:
    text = "\n".join(
        [
            "# HELP tapstream_tapper_dirty_bytes Bytes marked dirty",
            'tapstream_tapper_dirty_bytes{volume="a"} 65536.0',
            'tapstream_tapper_dirty_bytes{volume="b"} 131072.0',
            "tapstream_tapper_dirty_bytes_total 7.0",
        ]
    )
    assert server_stats.gauge(text, "tapstream_tapper_dirty_bytes") == 196608.0
    assert server_stats.gauge(text, "tapstream_tapper_rpo_seconds") is None


def test_cpu_by_thread_counts_a_busy_helper_thread_under_other() -> None:
    import threading

    before = server_stats.cpu_by_thread(os.getpid())
    assert set(before) == {"main", "rdk", "other"} and before["main"] > 0

    burnt, release = threading.Event(), threading.Event()

    def burn() -> None:
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        burnt.set()
        release.wait(10)  # stay alive until read: an ended thread leaves /proc/<pid>/task

    t = threading.Thread(target=burn)
    t.start()
    assert burnt.wait(10)
    during = server_stats.cpu_by_thread(os.getpid())
    release.set()
    t.join()
    assert during["other"] - before["other"] >= 0.2
    # Threads that ended (a long test session's) count in the process total only.
    assert sum(during.values()) <= server_stats.cpu_seconds(os.getpid()) + 0.05

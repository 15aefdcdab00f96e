"""What a benchmarked server costs and how far behind it runs, read from outside the process:
CPU seconds from /proc (every thread's, librdkafka's included) and gauges from its Prometheus
endpoint, sampled in a thread while fio runs."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu(stat: str) -> float:
    """utime + stime in seconds from a /proc/<pid>/stat line (the command may hold spaces and
    parentheses, so fields are counted after the last ')'). Covers every thread of the process."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return parse_cpu(f.read())


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds per kind of thread: `main` (the event loop), `rdk` (librdkafka's own threads:
    rdk:main, rdk:broker*), `other` (Python helper threads: the producer's poll thread, executors).
    Threads that already exited are not counted."""
    out = {"main": 0.0, "rdk": 0.0, "other": 0.0}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue  # the thread ended between listing and reading
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        kind = "main" if int(task) == pid else "rdk" if comm.startswith("rdk:") else "other"
        out[kind] += parse_cpu(stat)
    return out


def gauge(text: str, name: str) -> float | None:
    """The sum of a gauge's samples (every label set) in Prometheus text format; None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def scrape(port: int, names: tuple[str, ...]) -> dict[str, float | None]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {n: gauge(text, n) for n in names}


@dataclass
class Sampler:
    """Polls gauges every `interval` s in a thread; keeps each one's maximum and last value."""

    port: int
    names: tuple[str, ...]
    interval: float = 0.2
    maxima: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict[str, float]:
        got = {k: v for k, v in scrape(self.port, self.names).items() if v is not None}
        for k, v in got.items():
            self.maxima[k] = max(v, self.maxima.get(k, v))
        self.last.update(got)
        return got

    def start(self) -> Sampler:
        def run() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.sample()
                except OSError:
                    pass  # a scrape that timed out under load: the next one counts

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def wait_until_zero(self, names: tuple[str, ...], timeout: float) -> float | None:
        """Seconds until every gauge in `names` reads 0 (the backlog drained), None at timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            got = self.sample()
            if all(got.get(n, 0.0) == 0.0 for n in names):
                return time.monotonic() - t0
            time.sleep(self.interval)
        return None

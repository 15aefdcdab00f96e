"""What the chaos scenarios share: a verifying fio load through the tapper, the protected and
mirrored topics' state, and a lag sampler across MirrorMaker 2 (the replicator's own probe)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tapstream.replicator.lag import LagProbe

MIB = 1024 * 1024


def start_fio(uri: str, cwd: Path, size_mib: int, rate: str, seed: int) -> subprocess.Popen[str]:
    """Random writes of 4-64 KiB over `size_mib` at `rate` (so a fault lands mid-load), every block
    carrying a crc32c header that fio reads back and checks once it has written them all."""
    return subprocess.Popen(
        ["fio", "--name=chaos", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite",
         "--bsrange=4k-64k", f"--size={size_mib}M", f"--rate={rate}", "--iodepth=4",
         "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
         f"--randseed={seed}", "--output-format=json"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@dataclass(frozen=True)
class FioResult:
    writes: int  # write requests fio saw acknowledged
    max_latency_s: float  # the longest a write waited for its acknowledgement
    verify_errors: int


def finish_fio(fio: subprocess.Popen[str], timeout: float) -> FioResult:
    out, err = fio.communicate(timeout=timeout)
    assert fio.returncode == 0, f"fio failed ({fio.returncode}):\n{err[-3000:]}\n{out[-2000:]}"
    job = json.loads(out[out.index("{") :])["jobs"][0]
    write = job["write"]
    return FioResult(
        writes=int(write["total_ios"]),
        max_latency_s=write["clat_ns"]["max"] / 1e9,
        verify_errors=int(job.get("total_err", 0)) + err.lower().count("verify: bad"),
    )


def records(conf: dict[str, Any], topic: str, timeout: float = 30) -> int:
    """The end offset of `topic`'s partitions summed (0 while it does not exist). Right after an
    election the new leader may answer "high watermark not caught up" for a moment: ask again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _records(conf, topic)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _records(conf: dict[str, Any], topic: str) -> int:
    c = Consumer({**conf, "group.id": "tapstream-chaos-test", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        c.close()


def watermarks(conf: dict[str, Any], topic: str) -> dict[int, tuple[int, int]]:
    """(log start offset, end offset) of each of `topic`'s partitions ({} while it does not exist):
    the log start is where retention has cut the topic."""
    c = Consumer({**conf, "group.id": "tapstream-chaos-test", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in meta.partitions
        }
    finally:
        c.close()


def partition_state(conf: dict[str, Any], topic: str) -> tuple[int, list[int], list[int]]:
    """(leader, replicas, in-sync replicas) of the topic's partition 0."""
    meta = AdminClient(conf).list_topics(topic, timeout=10).topics[topic].partitions[0]
    return meta.leader, list(meta.replicas), list(meta.isrs)


@dataclass
class LagSampler:
    """Samples records behind and RPO (age of the oldest unmirrored write) twice a second."""

    protected: dict[str, Any]
    recovery: dict[str, Any]
    topic: str
    mirrored: str
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (time, records, rpo)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LagSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        probe = LagProbe(self.protected, self.recovery)
        try:
            while not self._stop.is_set():
                try:
                    lag = probe.measure(self.topic, self.mirrored)
                except Exception:  # a probe call timing out under the fault is a missed sample
                    lag = None
                if lag is not None:
                    self.samples.append((time.monotonic(), lag.records, lag.rpo_s))
                self._stop.wait(0.5)
        finally:
            probe.close()

    @property
    def max_records(self) -> int:
        return max((r for _, r, _ in self.samples), default=0)

    @property
    def max_rpo_s(self) -> float:
        return max((rpo for _, _, rpo in self.samples), default=0.0)

    def back_to_seconds(self, t: float, rpo_s: float = 2.0) -> float | None:
        """Seconds from `t` to the first sample after it whose RPO is under `rpo_s` again (under
        a steady load the lag is rarely exactly 0; what matters is that RPO is seconds again)."""
        for when, _, rpo in self.samples:
            if when >= t and rpo < rpo_s:
                return when - t
        return None


def differing_blocks(a: Path, b: Path, block: int = 64 * 1024) -> int:
    """How many `block`-sized blocks differ between two images (the writes a replay lost)."""
    diff = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if not x and not y:
                return diff
            diff += x != y

"""`make bench-scale`: many protected volumes at once, end to end across the two sites.

Each point runs N volumes (default 1, 8, 32, 64) served by T tapper processes (default 1 and 4; the
volumes dealt out in turn), every volume with a steady fio writer (nbd engine, random writes of
4k-64k at a fixed rate, iodepth 8), MirrorMaker 2 carrying the group's topic (one partition per
volume) to the recovery site, and there the journal and the VDSA (applying at once: no journal
history) as processes of their own (`--journals`, `--vdsas`: several share the work once their
consumer groups split a group's partitions; default one each).

While fio runs it samples, every `--interval` s: each tapper's metrics (last seq and RPO gauge per
volume, backlog), both clusters' end offsets of the topic (the replicator's RPO: the age of the
oldest write not yet on the recovery cluster, per partition, so per volume), the VDSA's applied seq
per volume, the journal's last indexed seq per volume (Postgres) and its indexed-events counter, and
every service's RSS. A consumer's lag is the time since the first write it has not reached was
published (head series interpolated: bench/scale_stats.py). CPU is user+sys from /proc over the
measured window (after fio's ramp), of every tapstream process, fio, the brokers, MirrorMaker 2 and
the recovery Postgres (its backends included), and divided by the MB written in it. After fio stops,
how long MirrorMaker 2, the journal and the VDSA take to drain.

Writes bench/results/scale.json, scale.png and prints a table (also as Markdown) and where the
series bends and why. The machine's other load counts: its load average is in the json.

    make bench-scale                              # or: .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --quick       # 1 and 8 volumes, 1 tapper, 10 s per point
    .venv/bin/python bench/scale.py --volumes 8,32 --tappers 2 --rate 1 --duration 20 --vdsas 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

import scale_stats as st
from server_stats import cpu_seconds
from tapstream.core.kafka import TopicSpec, client_config, ensure_topics
from tapstream.core.ports import free_port
from tapstream.core.settings import TapstreamSettings, load
from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.processes import rss_kib
from tapstream.tapper.service import TOPIC_OVERHEAD
from tapstream.tapper.settings import TapperSettings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VDSA_GROUP = "tapstream-vdsa-apply"  # the recovery VDSA's consumer group (services/vdsa/apply.py)
MIB = 1 << 20
T = TypeVar("T")


# --- the processes -------------------------------------------------------------------------------
@dataclass
class Service:
    kind: str  # tapper | journal | vdsa
    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    nbd_port: int = 0

    def scrape(self) -> str | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ) as r:
                return str(r.read().decode())
        except OSError:
            return None  # not up yet, or a scrape that timed out under load: the next one counts

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def died(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}"


def start(
    kind: str, name: str, env: dict[str, str], extra: dict[str, str], work: Path, nbd_port: int = 0
) -> Service:
    port = free_port()
    log = work / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"tapstream.{kind}"],
            env={**env, **extra, "TAPSTREAM_METRICS_PORT": str(port)},
            stdout=out,
            stderr=out,
        )
    return Service(kind, name, proc, port, log, nbd_port)


def until(what: str, check: Callable[[], bool], timeout: float, services: list[Service]) -> float:
    """Seconds until `check()` holds; SystemExit if a service died or at the deadline."""
    t0 = time.monotonic()
    while not check():
        for s in services:
            if why := s.died():
                raise SystemExit(why)
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - t0


class LogTail:
    """What MirrorMaker 2 logged from now on (its log is shared: another test's lines too)."""

    FAILED = ("OutOfMemoryError", "Task threw an uncaught and unrecoverable exception")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.start = path.stat().st_size if path is not None and path.exists() else 0

    def failures(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            if f.seek(0, os.SEEK_END) < self.start:
                self.start = 0  # rotated
            f.seek(self.start)
            text = f.read(64 * MIB).decode(errors="replace")
        return [line[:300] for line in text.splitlines() if any(m in line for m in self.FAILED)]


def nbd_listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(8) == b"NBDMAGIC"
    except OSError:
        return False


class Postgres:
    """The recovery site's database from this thread-based bench: one asyncpg connection on a loop
    of its own."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(url))
        self.lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def indexed_seq(self, group: str, volumes: list[str]) -> dict[str, int]:
        """The journal's last indexed seq per volume (one index probe each)."""
        with self.lock:
            rows = self.run(
                self.conn.fetch(
                    "select v, (select max(seq) from journal_events e where e.group_name=$1 "
                    "and e.volume=v) as seq from unnest($2::text[]) as v",
                    group,
                    volumes,
                )
            )
        return {r["v"]: r["seq"] or 0 for r in rows}

    def forget(self, group: str, topic: str) -> None:
        with self.lock:
            for sql, arg in (
                ("delete from journal_events where group_name=$1", group),
                ("delete from journal_checkpoints where group_name=$1", group),
                ("delete from journal_applied where group_name=$1", group),
                ("delete from journal_offsets where topic=$1", topic),
            ):
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    self.run(self.conn.execute(sql, arg))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def end_offsets(admin: AdminClient, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end offset (records in it so far); {} while the topic is not there."""
    try:
        futs = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
            request_timeout=5,
        )
        return {tp.partition: int(f.result().offset) for tp, f in futs.items()}
    except KafkaException:
        return {}


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Postgres' backends of its postmaster)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry))
    return out


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def cpu_by_pid(pids: dict[str, list[int]]) -> dict[tuple[str, int], float]:
    out = {}
    for kind, ps in pids.items():
        for pid in ps:
            with contextlib.suppress(OSError):
                out[(kind, pid)] = cpu_seconds(pid)
    return out


# --- sampling ------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Time series of one point, each value with the monotonic time it was read."""

    tapper_seq: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    tapper_rpo: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    backlog: list[tuple[float, float]] = field(default_factory=list)
    protected_end: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    recovery_end: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    vdsa_seq: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    vdsa_events: list[tuple[float, float]] = field(default_factory=list)
    journal_seq: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    journal_events: list[tuple[float, float]] = field(default_factory=list)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    misses: int = 0  # scrapes or queries that failed (a service busy past the timeout)


class Sampler:
    def __init__(
        self,
        group: str,
        topic: str,
        mirrored: str,
        volumes: list[str],
        services: list[Service],
        admins: dict[str, AdminClient],
        pg: Postgres,
        interval: float,
    ) -> None:
        self.group, self.topic, self.mirrored = group, topic, mirrored
        self.volumes, self.services, self.admins, self.pg = volumes, services, admins, pg
        self.interval = interval
        self.s = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> Samples:
        self._stop.set()
        self._thread.join()
        return self.s

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.sample()
            except Exception as exc:  # a sampling round lost is a gap, not a failed bench
                self.s.misses += 1
                print(f"    (sampling: {exc!r})", flush=True)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def sample(self) -> None:
        s, now = self.s, time.monotonic
        n = len(self.volumes)
        # Consumers first, heads after: a head read later never makes a lag look shorter.
        # A round in which one VDSA or journal did not answer is no reading of theirs (its volumes
        # and events would count as none).
        vdsas = [x.scrape() for x in self.services if x.kind == "vdsa"]
        t = now()
        if None in vdsas:
            s.misses += 1
        else:
            applied: dict[str, float] = {}
            for text in vdsas:
                assert text is not None
                for v, seq in st.by_label(text, "tapstream_vdsa_applied_seq", "volume").items():
                    applied[v] = max(applied.get(v, 0.0), seq)  # a volume that moved: its max
            for v in self.volumes:
                s.vdsa_seq.setdefault(v, []).append((t, applied.get(v, 0.0)))
            events = [st.total(x or "", "tapstream_vdsa_applied_events_total") for x in vdsas]
            s.vdsa_events.append((t, sum(e or 0.0 for e in events)))
        journals = [x.scrape() for x in self.services if x.kind == "journal"]
        if None in journals:
            s.misses += 1
        else:
            indexed = [
                st.total(x or "", "tapstream_journal_indexed_events_total") for x in journals
            ]
            s.journal_events.append((now(), sum(e or 0.0 for e in indexed)))
        seqs = self.pg.indexed_seq(self.group, self.volumes)
        t = now()
        for v in self.volumes:
            s.journal_seq.setdefault(v, []).append((t, float(seqs.get(v, 0))))
        rec = end_offsets(self.admins["recovery"], self.mirrored, n)
        t = now()
        for p in range(n):
            s.recovery_end.setdefault(p, []).append((t, float(rec.get(p, 0))))
        prot = end_offsets(self.admins["protected"], self.topic, n)
        t = now()
        if prot:
            for p in range(n):
                s.protected_end.setdefault(p, []).append((t, float(prot.get(p, 0))))
        backlog = 0.0
        for svc in (x for x in self.services if x.kind == "tapper"):
            text = svc.scrape()
            if text is None:
                s.misses += 1
                continue
            t = now()
            for v, seq in st.by_label(text, "tapstream_tapper_seq", "volume").items():
                s.tapper_seq.setdefault(v, []).append((t, seq))
            for v, rpo in st.by_label(text, "tapstream_tapper_rpo_seconds", "volume").items():
                s.tapper_rpo.setdefault(v, []).append((t, rpo))
            backlog += st.total(text, "tapstream_tapper_backlog_bytes") or 0.0
        s.backlog.append((now(), backlog))
        t = now()
        for svc in self.services:
            s.rss.setdefault(svc.name, []).append((t, rss_kib(svc.proc.pid)))


# --- fio -----------------------------------------------------------------------------------------
def fio_cmd(uris: dict[str, str], args: argparse.Namespace, prime: bool = False) -> list[str]:
    """One fio process, one thread per volume (its own job and NBD connection), each writing
    random 4k-64k blocks at the same fixed rate; or (prime) one 4k write per volume."""
    cmd = [
        "fio",
        "--output-format=json",
        "--thread",
        "--ioengine=nbd",
        "--rw=randwrite",
        f"--size={args.volume_mib}m",
        "--norandommap",
        "--randrepeat=0",
    ]
    if prime:
        cmd += ["--bs=4k", "--io_size=4k", "--iodepth=1"]
    else:
        cmd += [
            f"--bsrange={args.bs}",
            f"--iodepth={args.iodepth}",
            f"--rate={int(args.rate * 1e6)}",
            "--time_based",
            f"--runtime={args.duration}",
            f"--ramp_time={args.ramp}",
        ]
    for name, uri in uris.items():
        cmd += [f"--name={name}", f"--uri={uri}"]
    return cmd


def fio_summary(out: str) -> dict[str, Any]:
    jobs = json.loads(out[out.index("{") :])["jobs"]
    per = {j["jobname"]: j["write"] for j in jobs}
    mbps = {v: w["bw_bytes"] / 1e6 for v, w in per.items()}

    def pct(w: dict[str, Any], key: str) -> float | None:
        p = w.get("clat_ns", {}).get("percentile", {})
        return p[key] / 1e6 if key in p else None

    p50 = [x for w in per.values() if (x := pct(w, "50.000000")) is not None]
    p99 = [x for w in per.values() if (x := pct(w, "99.000000")) is not None]
    return {
        "write_mbps": sum(mbps.values()),
        "volume_mbps_min": min(mbps.values()),
        "volume_mbps_median": statistics.median(mbps.values()),
        "write_p50_ms_median": statistics.median(p50) if p50 else None,
        "write_p99_ms_median": statistics.median(p99) if p99 else None,
        "write_p99_ms_max": max(p99) if p99 else None,
        "fio_errors": sum(j.get("error", 0) for j in jobs),
    }


# --- one point -----------------------------------------------------------------------------------
@dataclass
class Ctx:
    args: argparse.Namespace
    env: dict[str, str]
    work: Path
    admins: dict[str, AdminClient]
    pg: Postgres
    infra: dict[str, int]  # component -> pid (brokers, MirrorMaker 2, recovery Postgres)
    run_id: str
    settings: TapstreamSettings
    mm2_log: Path | None = None
    idle_cores: dict[str, float] = field(default_factory=dict)  # the stack's, before any point

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    @property
    def alias(self) -> str:
        return self.settings.protected_alias


def lags(
    head: dict[Any, list[tuple[float, float]]],
    consumer: dict[Any, list[tuple[float, float]]],
    w0: float,
    w1: float,
) -> tuple[dict[Any, list[float]], float]:
    """Per key, the consumer's time lag at each of its samples in [w0, w1]; and the largest lag at
    its last sample in the window."""
    out: dict[Any, list[float]] = {}
    end = 0.0
    for key, series in consumer.items():
        h = head.get(key, [])
        inside = [(t, c) for t, c in series if w0 <= t <= w1]
        out[key] = [st.time_lag(h, t, c) for t, c in inside]
        if inside:
            end = max(end, st.time_lag(h, *inside[-1]))
    return out, end


def summary_of(
    head: dict[Any, list[tuple[float, float]]],
    consumer: dict[Any, list[tuple[float, float]]],
    w0: float,
    w1: float,
) -> dict[str, Any]:
    lag, lag_end = lags(head, consumer, w0, w1)
    produced = sum(st.value_at(h, w1) - st.value_at(h, w0) for h in head.values())
    consumed = sum(st.value_at(c, w1) - st.value_at(c, w0) for c in consumer.values())
    behind = sum(
        max(0.0, st.value_at(head.get(k, []), w1) - st.value_at(c, w1)) for k, c in consumer.items()
    )
    return {
        "lag_s": st.per_volume(lag),
        "lag_end_s": lag_end,
        "lag_events_end": behind,
        "keeps_up": st.keeps_up(produced, consumed),
        "per_s": consumed / (w1 - w0) if w1 > w0 else 0.0,
    }


def behind(s: Samples) -> str:
    """Which volumes' writes a consumer lacks: volume -> (published, journal, VDSA) seq."""
    out = {
        v: (x[-1][1], last(s.journal_seq.get(v)), last(s.vdsa_seq.get(v)))
        for v, x in s.tapper_seq.items()
        if min(last(s.journal_seq.get(v)), last(s.vdsa_seq.get(v))) < x[-1][1]
    }
    return f"published, journal, VDSA seq of the volumes behind: {out}"


def last(series: list[tuple[float, float]] | None) -> float:
    return series[-1][1] if series else -1.0


def caught_up(sampler: Sampler, services: list[Service], timeout: float) -> dict[str, float | None]:
    """Seconds until MirrorMaker 2, the journal and the VDSA hold every write made so far (None:
    not within `timeout`)."""
    t0 = time.monotonic()
    done: dict[str, float | None] = {"mirror": None, "journal": None, "vdsa": None}
    while time.monotonic() - t0 < timeout and None in done.values():
        time.sleep(sampler.interval)
        s = sampler.s
        if not s.tapper_seq:
            continue
        final = {v: x[-1][1] for v, x in s.tapper_seq.items()}
        checks = {
            "mirror": all(
                s.recovery_end[p][-1][1] >= s.protected_end[p][-1][1] for p in s.protected_end
            )
            if s.protected_end
            else False,
            "journal": all(last(s.journal_seq.get(v)) >= final[v] for v in final),
            "vdsa": all(last(s.vdsa_seq.get(v)) >= final[v] for v in final),
        }
        for k, ok in checks.items():
            if ok and done[k] is None:
                done[k] = round(time.monotonic() - t0, 2)
        for svc in services:
            if why := svc.died():
                raise SystemExit(why)
    return done


def group_of(ctx: Ctx, n: int, tappers: int) -> str:
    return f"scale-{ctx.run_id}-n{n}-t{tappers}"


def topics_of(ctx: Ctx, n: int, tappers: int) -> tuple[str, str]:
    """The point's write topic and its mirror at the recovery site."""
    topic = f"{ctx.prefix}.writes.{group_of(ctx, n, tappers)}"
    return topic, f"{ctx.alias}.{topic}"


def create_topics(ctx: Ctx, plan: list[tuple[int, int]]) -> None:
    """Every point's topic at the start, as its tapper would make it: MirrorMaker 2 takes them into
    its tasks in one reconfiguration, not one per point."""
    chunk = TapperSettings.model_fields["tapper_chunk_bytes"].default
    config = {
        "retention.ms": str(3600 * 1000),
        "max.message.bytes": str(chunk + TOPIC_OVERHEAD),
        "message.timestamp.type": "CreateTime",
        "cleanup.policy": "delete",
    }
    specs = [TopicSpec(topics_of(ctx, n, t)[0], partitions=n, config=config) for n, t in plan]
    asyncio.run(ensure_topics(client_config(ctx.settings, ctx.settings.protected_bootstrap), specs))


def delete_topics(ctx: Ctx, protected: list[str]) -> None:
    for site, names in (
        ("protected", protected),
        ("recovery", [f"{ctx.alias}.{t}" for t in protected]),
    ):
        for fut in ctx.admins[site].delete_topics(names).values():
            with contextlib.suppress(Exception):
                fut.result(30)


def run_point(ctx: Ctx, n: int, tappers: int) -> dict[str, Any]:
    a = ctx.args
    group = group_of(ctx, n, tappers)
    topic, mirrored = topics_of(ctx, n, tappers)
    work = ctx.work / group
    work.mkdir(parents=True)
    volumes = [f"v{i:03d}" for i in range(n)]
    for v in volumes:
        with open(work / f"{v}.img", "wb") as f:
            f.truncate(a.volume_mib * MIB)
    services: list[Service] = []
    sampler: Sampler | None = None
    fio: subprocess.Popen[str] | None = None
    point: dict[str, Any] = {"n": n, "tappers": tappers, "journals": a.journals, "vdsas": a.vdsas}
    try:
        t_start = time.monotonic()
        mm2_log = LogTail(ctx.mm2_log)
        for i in range(tappers):
            mine = volumes[i::tappers]
            port = free_port()
            services.append(
                start(
                    "tapper",
                    f"tapper-{i}",
                    ctx.env,
                    {
                        "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                            [
                                {
                                    "name": v,
                                    "path": str(work / f"{v}.img"),
                                    "group": group,
                                    "mode": a.mode,
                                }
                                for v in mine
                            ]
                        ),
                        "TAPSTREAM_TAPPER_LISTEN_PORT": str(port),
                        "TAPSTREAM_TAPPER_STATE_DIR": str(work / f"tapper-{i}"),
                        "TAPSTREAM_TAPPER_HOST_ID": f"scale-{i}",
                        "TAPSTREAM_TAPPER_PARTITIONS": str(n),  # one per volume, whoever creates it
                        "TAPSTREAM_TAPPER_RETENTION_HOURS": "1",
                        "TAPSTREAM_LOG_LEVEL": "WARNING",
                    },
                    work,
                    nbd_port=port,
                )
            )
        recovery = {
            "TAPSTREAM_SITE": "recovery",
            "TAPSTREAM_REPLICA_DIR": str(work / "replicas"),
        }
        for i in range(a.journals):
            services.append(
                start(
                    "journal",
                    f"journal-{i}",
                    ctx.env,
                    {
                        **recovery,
                        "TAPSTREAM_JOURNAL_GROUPS": json.dumps([group]),
                        # several share the partitions (consumer group tapstream-journal-index)
                        "TAPSTREAM_JOURNAL_SHARE_PARTITIONS": str(a.journals > 1).lower(),
                    },
                    work,
                )
            )
        for i in range(a.vdsas):
            services.append(
                start(
                    "vdsa",
                    f"vdsa-{i}",
                    ctx.env,
                    {
                        **recovery,
                        "TAPSTREAM_VDSA_GROUPS": json.dumps([group]),
                        "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "0",
                    },
                    work,
                )
            )
        tapper_svcs = [s for s in services if s.kind == "tapper"]
        point["tapper_start_s"] = round(
            until(
                f"{tappers} tapper(s) serving {n} volumes",
                lambda: all(nbd_listens(s.nbd_port) for s in tapper_svcs),
                a.start_timeout,
                services,
            ),
            2,
        )
        until(
            "the topic mirrored to the recovery site",
            lambda: len(end_offsets(ctx.admins["recovery"], mirrored, n)) == n,
            60,
            services,
        )
        until(
            "the journal and VDSA metrics",
            lambda: all(s.scrape() is not None for s in services if s.kind != "tapper"),
            60,
            services,
        )
        point["vdsa_assigned_s"] = vdsa_assigned(ctx, mirrored, n, services)
        point["ready_s"] = round(time.monotonic() - t_start, 2)
        print(
            f"  n={n:3} tappers={tappers}: serving after {point['tapper_start_s']:.1f} s, "
            f"all ready after {point['ready_s']:.1f} s",
            flush=True,
        )

        uris = {
            v: f"nbd://127.0.0.1:{tapper_svcs[i % tappers].nbd_port}/{v}"
            for i, v in enumerate(volumes)
        }
        sampler = Sampler(
            group, topic, mirrored, volumes, services, ctx.admins, ctx.pg, a.interval
        ).start()
        # One write per volume first, and the window only once it is at the recovery site, journaled
        # and applied: MirrorMaker 2 takes a new topic's partitions into its tasks tens of seconds
        # after they appear, which is no steady state.
        prime = subprocess.run(fio_cmd(uris, a, prime=True), capture_output=True, text=True)
        if prime.returncode != 0:
            raise SystemExit(f"fio failed:\n{prime.stdout[-2000:]}\n{prime.stderr[-2000:]}")
        flowing = caught_up(sampler, services, a.prime_timeout)
        point["first_write_through_s"] = flowing
        if None in flowing.values():
            print(
                f"    (after {a.prime_timeout:.0f} s the first writes are not through: {flowing}; "
                f"{behind(sampler.s)})",
                flush=True,
            )
        fio = subprocess.Popen(
            fio_cmd(uris, a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        pids = {s.name: [s.proc.pid] for s in services}
        pids["fio"] = [fio.pid]
        pids["bench"] = [os.getpid()]
        for name, pid in ctx.infra.items():
            pids[name] = [pid, *children(pid)] if name.startswith("postgres") else [pid]
        # The window: from fio's ramp end to its runtime's end (fio's own counters cover the same).
        fio_t0 = time.monotonic()
        out: dict[str, Any] = {}

        def wait_fio() -> None:
            out["stdout"], out["stderr"] = fio.communicate(timeout=a.ramp + a.duration + 180)

        waiter = threading.Thread(target=wait_fio, daemon=True)
        waiter.start()
        time.sleep(a.ramp)  # fio's ramp: writes that fio itself leaves out of its figures
        w0, cpu0, jif0 = time.monotonic(), cpu_by_pid(pids), machine_jiffies()
        point["loadavg_at_start"] = round(os.getloadavg()[0], 1)
        waiter.join(a.duration)
        w1, cpu1, jif1 = time.monotonic(), cpu_by_pid(pids), machine_jiffies()
        waiter.join()
        if fio.returncode != 0:
            raise SystemExit(f"fio failed:\n{out['stdout'][-2000:]}\n{out['stderr'][-2000:]}")
        point["fio_wall_s"] = round(time.monotonic() - fio_t0, 2)
        point["loadavg_at_end"] = round(os.getloadavg()[0], 1)
        point["drain_s"] = caught_up(sampler, services, a.drain_timeout)
        # A MirrorMaker 2 task that failed (its heap) stops mirroring its partitions until the
        # connector's tasks are reconfigured: the reason a lag only grows.
        point["mirrormaker_task_failures"] = mm2_log.failures()
        s = sampler.stop()
        if a.keep:  # the raw series beside the logs, to look into a point
            (work / "series.json").write_text(json.dumps(s.__dict__))
        point.update(analyse(ctx, n, volumes, s, w0, w1, cpu0, cpu1, jif0, jif1))
        point.update(fio_summary(out["stdout"]))
        target = n * a.rate
        point["target_mbps"] = target
        point["write_ratio"] = point["write_mbps"] / target
        point["mb_written"] = point["write_mbps"] * point["window_s"]
        for key in ("cpu_s", "cpu_s_above_idle"):
            point[key.replace("cpu_s", "cpu_s_per_mb")] = {
                k: v / point["mb_written"] for k, v in point[key].items() if point["mb_written"]
            }
        point["sampling_misses"] = s.misses
        point["logs"] = str(work)
        return point
    finally:
        if fio is not None and fio.poll() is None:
            fio.kill()
        if sampler is not None:
            sampler.stop()
        for svc in services:
            svc.stop()
        delete_topics(ctx, [topic])
        with contextlib.suppress(Exception):
            ctx.pg.forget(group, mirrored)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def vdsa_assigned(ctx: Ctx, topic: str, n: int, services: list[Service]) -> float | None:
    """Seconds until the VDSA consumer group holds every partition of the topic (it reads the
    control topic's kept checkpoints first); None if that cannot be seen (another group id)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        for s in services:
            if why := s.died():
                raise SystemExit(why)
        try:
            desc = ctx.admins["recovery"].describe_consumer_groups([VDSA_GROUP])[VDSA_GROUP]
            d = desc.result(10)
            held = {
                tp.partition
                for m in d.members
                for tp in (m.assignment.topic_partitions if m.assignment else [])
                if tp.topic == topic
            }
            if len(held) == n:
                return round(time.monotonic() - t0, 2)
        except KafkaException:
            pass
        time.sleep(0.5)
    print(f"    (the VDSA group {VDSA_GROUP} holds no partition of {topic}: going on)")
    return None


def idle(infra: dict[str, int], seconds: float) -> dict[str, float]:
    """Cores each component of the stack burns while the bench writes nothing."""
    pids = {name: [pid, *children(pid)] if name.startswith("postgres") else [pid]
            for name, pid in infra.items()}  # fmt: skip
    before = cpu_by_pid(pids)
    time.sleep(seconds)
    after = cpu_by_pid(pids)
    out: dict[str, float] = {}
    for key, v in after.items():
        if key in before:
            out[key[0]] = out.get(key[0], 0.0) + (v - before[key]) / seconds
    return {k: round(v, 3) for k, v in out.items()}


def kind_of(name: str) -> str:
    """`tapper-3` -> `tapper`; the stack's components (`kafka-recovery`) keep their names."""
    kind, _, rest = name.rpartition("-")
    return kind if rest.isdigit() else name


def analyse(
    ctx: Ctx,
    n: int,
    volumes: list[str],
    s: Samples,
    w0: float,
    w1: float,
    cpu0: dict[tuple[str, int], float],
    cpu1: dict[tuple[str, int], float],
    jif0: tuple[int, int],
    jif1: tuple[int, int],
) -> dict[str, Any]:
    window = w1 - w0
    out: dict[str, Any] = {"window_s": round(window, 2)}
    in_window = lambda xs: [v for t, v in xs if w0 <= t <= w1]  # noqa: E731
    out["events_per_s"] = sum(st.rate(x, w0, w1) for x in s.tapper_seq.values())
    # RPO: at the tapper (its gauge: acknowledged or in-flight writes not yet in Kafka) and at the
    # recovery site (the oldest write of the volume's partition not yet mirrored).
    out["rpo_tapper_s"] = st.per_volume({v: in_window(x) for v, x in s.tapper_rpo.items()})
    mirror = summary_of(s.protected_end, s.recovery_end, w0, w1)
    part_lags, _ = lags(s.protected_end, s.recovery_end, w0, w1)
    out["rpo_recovery_s"] = st.per_volume(
        {v: part_lags.get(st.partition_of(v, n), []) for v in volumes}
    )
    out["mirror"] = mirror
    journal = summary_of(s.tapper_seq, s.journal_seq, w0, w1)
    journal["rows_per_s"] = st.rate(s.journal_events, w0, w1)
    out["journal"] = journal
    vdsa = summary_of(s.tapper_seq, s.vdsa_seq, w0, w1)
    vdsa["applied_per_s"] = st.rate(s.vdsa_events, w0, w1)
    out["vdsa"] = vdsa
    out["backlog_bytes_max"] = max(in_window(s.backlog), default=0.0)
    # Memory: each process's largest RSS in the window; per kind the sum over its processes.
    rss = {name: max(in_window(x), default=0) / 1024 for name, x in s.rss.items()}
    out["rss_mib"] = {k: round(v, 1) for k, v in rss.items()}
    kinds: dict[str, float] = {}
    for name, mib in rss.items():
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + mib
    out["rss_mib_by_kind"] = {k: round(v, 1) for k, v in kinds.items()}
    for name, pid in ctx.infra.items():
        if not name.startswith("postgres"):  # a postmaster's RSS says little of its backends'
            out["rss_mib"][name] = round(rss_kib(pid) / 1024, 1)
    # CPU over the window, per kind of process (the tappers summed, Postgres with its backends).
    cpu: dict[str, float] = {}
    for key, after in cpu1.items():
        if key in cpu0:
            cpu[kind_of(key[0])] = cpu.get(kind_of(key[0]), 0.0) + after - cpu0[key]
    out["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
    out["cpu_s_tapstream"] = round(sum(cpu.get(k, 0.0) for k in ("tapper", "journal", "vdsa")), 2)
    # The brokers, MirrorMaker 2 and Postgres burn CPU with no write at all (and for whatever else
    # uses the stack): only what they burnt above their idle rate is this point's.
    out["cpu_s_above_idle"] = {
        k: round(max(0.0, v - ctx.idle_cores.get(k, 0.0) * window), 2) for k, v in cpu.items()
    }
    busy, total = jif1[0] - jif0[0], jif1[1] - jif0[1]
    out["cpu_busy_pct"] = round(100 * busy / total, 1) if total else None
    out["cores_busy"] = round(busy / os.sysconf("SC_CLK_TCK") / window, 2) if window else None
    return out


# --- output --------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def table_rows(points: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for p in points:
        rows.append(
            [
                str(p["n"]),
                str(p["tappers"]),
                f"{p['write_mbps']:.1f} / {p['target_mbps']:.0f}",
                f"{fmt(p['rpo_recovery_s'].get('p50_median'))} / "
                f"{fmt(p['rpo_recovery_s'].get('p99_max'))}",
                f"{fmt(p['rpo_tapper_s'].get('p99_max'), '.3f')}",
                f"{p['journal']['rows_per_s']:,.0f}",
                f"{fmt(p['journal']['lag_s'].get('p99_max'), '.1f')}",
                f"{fmt(p['vdsa']['lag_s'].get('p99_max'), '.1f')}",
                f"{sum(v for k, v in p['rss_mib'].items() if k.startswith('tapper')):.0f} / "
                f"{p['rss_mib_by_kind'].get('journal', 0):.0f} / "
                f"{p['rss_mib_by_kind'].get('vdsa', 0):.0f}",
                f"{p['cpu_s_tapstream'] / p['mb_written']:.3f}" if p["mb_written"] else "-",
                f"{sum(p['cpu_s_above_idle'].values()) / p['mb_written']:.3f}"
                if p["mb_written"]
                else "-",
                f"{fmt(p['cpu_busy_pct'], '.0f')}",
            ]
        )
    return rows


HEADER = [
    "N",
    "tappers",
    "MB/s (target)",
    "RPO s p50 / p99",
    "tapper RPO p99",
    "journal rows/s",
    "journal lag p99 s",
    "VDSA lag p99 s",
    "RSS MiB tapper / journal / VDSA",
    "CPU s/MB tapstream",
    "CPU s/MB all above idle",
    "machine busy %",
]


def markdown(points: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(points)]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels: list[tuple[str, str, list[tuple[str, Callable[[dict[str, Any]], float | None]]]]] = [
        ("aggregate write MB/s", "MB/s", [
            ("written", lambda p: p["write_mbps"]), ("target", lambda p: p["target_mbps"])]),
        ("RPO p99, worst volume", "seconds", [
            ("recovery site", lambda p: p["rpo_recovery_s"].get("p99_max")),
            ("tapper (Kafka ack)", lambda p: p["rpo_tapper_s"].get("p99_max"))]),
        ("lag behind the write, p99 worst volume", "seconds", [
            ("journal", lambda p: p["journal"]["lag_s"].get("p99_max")),
            ("VDSA apply", lambda p: p["vdsa"]["lag_s"].get("p99_max"))]),
        ("events/s", "per second", [
            ("written", lambda p: p["events_per_s"]),
            ("journal rows", lambda p: p["journal"]["rows_per_s"]),
            ("VDSA applied", lambda p: p["vdsa"]["applied_per_s"])]),
        ("RSS MiB (sum per service)", "MiB", [
            ("tappers", lambda p: p["rss_mib_by_kind"].get("tapper")),
            ("journal", lambda p: p["rss_mib_by_kind"].get("journal")),
            ("VDSA", lambda p: p["rss_mib_by_kind"].get("vdsa"))]),
        ("CPU seconds per MB written", "s/MB", [
            ("tappers", lambda p: p["cpu_s_per_mb"].get("tapper")),
            ("journal", lambda p: p["cpu_s_per_mb"].get("journal")),
            ("VDSA", lambda p: p["cpu_s_per_mb"].get("vdsa")),
            ("kafka x2 + MM2 above idle", lambda p: sum(
                v for k, v in p["cpu_s_per_mb_above_idle"].items()
                if k.startswith(("kafka", "mirror")))),
            ("everything above idle", lambda p: sum(p["cpu_s_per_mb_above_idle"].values()))]),
    ]  # fmt: skip
    styles = {1: "-", 2: "-.", 4: "--"}
    for ax, (title, unit, lines) in zip(axes.flat, panels, strict=True):
        for i, (label, get) in enumerate(lines):
            for tappers in sorted({p["tappers"] for p in points}):
                if label == "target" and tappers != points[0]["tappers"]:
                    continue  # the same line whatever serves the volumes
                row = [p for p in points if p["tappers"] == tappers]
                xs = [p["n"] for p in row]
                ys = [get(p) for p in row]
                ax.plot(
                    xs,
                    [float("nan") if y is None else y for y in ys],
                    styles.get(tappers, ":"),
                    marker="o",
                    color=f"C{i}",
                    label=f"{label}, {tappers} tapper{'s' if tappers > 1 else ''}",
                )
        ax.set_xscale("log", base=2)
        ns = sorted({p["n"] for p in points})
        ax.set_xticks(ns, [str(x) for x in ns])
        ax.set_xlabel("protected volumes (N)")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(
        f"tapstream at scale: {cfg['rate_mbps_per_volume']} MB/s per volume ({cfg['mode']}, "
        f"random {cfg['bs']}), {cfg['duration_s']} s per point, {result['host']['cpus']} cores "
        "shared with both brokers, MirrorMaker 2 and Postgres"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def print_point(p: dict[str, Any]) -> None:
    j, v, m = p["journal"], p["vdsa"], p["mirror"]
    print(
        f"  n={p['n']:3} tappers={p['tappers']}: {p['write_mbps']:6.1f} MB/s of "
        f"{p['target_mbps']:.0f} ({p['events_per_s']:,.0f} events/s); RPO recovery p50 "
        f"{fmt(p['rpo_recovery_s'].get('p50_median'))} p99 {fmt(p['rpo_recovery_s'].get('p99_max'))} s; "
        f"journal {j['rows_per_s']:,.0f} rows/s lag p99 {fmt(j['lag_s'].get('p99_max'), '.1f')} s; "
        f"VDSA lag p99 {fmt(v['lag_s'].get('p99_max'), '.1f')} s (keeps up "
        f"{fmt(v['keeps_up'])}); MM2 keeps up {fmt(m['keeps_up'])}; drained {p['drain_s']}; "
        f"CPU busy {fmt(p['cpu_busy_pct'], '.0f')}% ({st.busiest(p['cpu_s'], p['window_s'], 4)} cores)"
        + (
            f"; MirrorMaker 2 task failures: {len(p['mirrormaker_task_failures'])}"
            if p.get("mirrormaker_task_failures")
            else ""
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", help="the N of each point (default 1,8,32,64; quick 1,8)")
    ap.add_argument("--tappers", help="tapper processes per N, at most N (default 1,4; quick 1)")
    ap.add_argument(
        "--rate", type=float, default=2.0, help="MB/s (10^6 B) each volume's fio writes"
    )
    ap.add_argument("--duration", type=int, help="measured seconds per point (30; quick 10)")
    ap.add_argument("--ramp", type=int, help="seconds of fio's ramp before the window (8; quick 4)")
    ap.add_argument("--drain-timeout", type=float, default=45.0, help="longest wait for the drain")
    ap.add_argument("--mode", choices=("sync", "async"), default="sync", help="the volumes' mode")
    ap.add_argument("--bs", default="4k-64k", help="fio --bsrange of the random writes")
    ap.add_argument("--iodepth", type=int, default=8)
    ap.add_argument("--volume-mib", type=int, default=32, help="size of each volume")
    ap.add_argument(
        "--journals", type=int, default=1, help="journal processes at the recovery site"
    )
    ap.add_argument("--vdsas", type=int, default=1, help="VDSA processes at the recovery site")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument(
        "--baseline", type=float, default=10.0, help="seconds the idle stack's CPU is measured"
    )
    ap.add_argument(
        "--prime-timeout", type=float, default=60.0, help="longest wait for the first writes"
    )
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--quick", action="store_true", help="a short run: the defaults in brackets")
    ap.add_argument("--keep", action="store_true", help="keep each point's volumes and logs")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = ap.parse_args()
    defaults = (
        {"volumes": "1,8", "tappers": "1", "duration": 10, "ramp": 4}
        if args.quick
        else {"volumes": "1,8,32,64", "tappers": "1,4", "duration": 30, "ramp": 8}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.baseline = min(args.baseline, 5.0)
        args.drain_timeout = min(args.drain_timeout, 30.0)
        if args.out == RESULTS / "scale.json":  # a short run never overwrites the results
            args.out = Path(tempfile.gettempdir()) / "scale-quick.json"
    if shutil.which("fio") is None:
        raise SystemExit("fio is missing: run `make system-deps`")
    ns = [int(x) for x in args.volumes.split(",")]
    ts = [int(x) for x in args.tappers.split(",")]
    plan = [(n, t) for n in ns for t in ts if t <= n]

    stack = Stack(load(LocalStackSettings))
    settings = stack.client_settings()
    env = {
        **os.environ,
        **stack.env(),
        "TAPSTREAM_ENV_FILE": str(stack.root / "local.env"),
    }
    infra = {
        c.name: c.pid
        for c in stack.status()
        if c.pid is not None and c.name in ("kafka-protected", "kafka-recovery", "mirrormaker",
                                            "postgres-recovery")
    }  # fmt: skip
    admins = {
        "protected": AdminClient(client_config(settings, settings.protected_bootstrap)),
        "recovery": AdminClient(client_config(settings, settings.recovery_bootstrap)),
    }
    pg = Postgres(settings.recovery_database_url.get_secret_value())
    work = Path(tempfile.mkdtemp(prefix="scale-bench-", dir=stack.root))
    ctx = Ctx(args, env, work, admins, pg, infra, time.strftime("%H%M%S"), settings)
    ctx.mm2_log = next((c.log for c in stack.status() if c.name == "mirrormaker"), None)
    result: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "volumes": ns,
            "tappers": ts,
            "rate_mbps_per_volume": args.rate,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "mode": args.mode,
            "bs": args.bs,
            "iodepth": args.iodepth,
            "volume_mib": args.volume_mib,
            "journals": args.journals,
            "vdsas": args.vdsas,
            "interval_s": args.interval,
        },
        "host": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "points": [],
        "skipped": [],
    }
    t_all = time.monotonic()
    print(
        f"bench-scale: {len(plan)} points, {args.rate} MB/s per volume ({args.mode}, {args.bs}), "
        f"{args.duration} s each after a {args.ramp} s ramp; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    create_topics(ctx, plan)
    ctx.idle_cores = idle(infra, args.baseline)
    result["host"]["idle_cores"] = ctx.idle_cores
    print(
        f"  the stack at rest, in cores: {', '.join(f'{k} {v:.2f}' for k, v in ctx.idle_cores.items())}",
        flush=True,
    )
    try:
        for n, tappers in plan:
            need = (
                n * args.volume_mib * MIB * 2
                + n * args.rate * 1e6 * (args.duration + args.ramp) * 2
            )
            free = shutil.disk_usage(stack.root).free
            if free < need + (3 << 30):
                why = f"{free / 2**30:.1f} GiB free, the point may need {need / 2**30:.1f} GiB"
                print(f"  n={n} tappers={tappers}: skipped ({why})", flush=True)
                result["skipped"].append({"n": n, "tappers": tappers, "why": why})
                continue
            p = run_point(ctx, n, tappers)
            result["points"].append(p)
            print_point(p)
    finally:
        delete_topics(ctx, [topics_of(ctx, n, t)[0] for n, t in plan])  # what a failure left
        pg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["host"]["loadavg_after"] = os.getloadavg()
    result["wall_s"] = round(time.monotonic() - t_all, 1)
    result["bends"] = st.bends(result["points"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["points"]:
        chart(result, args.out.with_suffix(".png"))
    print(f"\n{markdown(result['points'])}\n")
    for b in result["bends"]:
        if b["bends_at_n"] is None:
            print(f"{b['tappers']} tapper(s): no bend up to the largest N "
                  f"(peak {b['peak_write_mbps']:.1f} MB/s at N={b['peak_at_n']})")  # fmt: skip
        else:
            print(
                f"{b['tappers']} tapper(s): bends at N={b['bends_at_n']}: "
                + "; ".join(b["reasons"])
                + f" (machine {fmt(b.get('cpu_busy_pct'), '.0f')}% busy; cores: "
                f"{b.get('cores_by_process')})"
            )
    print(f"wrote {args.out} and {args.out.with_suffix('.png').name} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()

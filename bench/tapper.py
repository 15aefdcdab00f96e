"""Tapper benchmark: fio's nbd engine (iodepth 16) against six NBD servers on the same file size,
in the same run:

  nbdkit-file      nbdkit's file plugin: the unprotected C limit
  nbdkit-python    nbdkit's python plugin with bench/nbdkit_pwrite_plugin.py: an unprotected Python peer
  tapstream-sync   the tapper, reply after Kafka's ack
  tapstream-async  the tapper, reply after the local write, publish in the background
  tapstream-sync-native   tapstream-sync served by the compiled data path (TAPSTREAM_TAPPER_NATIVE=on)
  tapstream-async-native  tapstream-async served by the compiled data path

The Python targets run with TAPSTREAM_TAPPER_NATIVE=off. After its last workload every tapstream
target is stopped (it drains) and its topic is replayed onto a blank image, which must equal the
volume byte for byte: no acknowledged write lost, async backlogs and catch-ups included.

Workloads: 4k random write (IOPS, p99 completion latency), 64k and 1M sequential write (MB/s, 10^6 B).
Writes bench/results/tapper.json (one object per target), a PNG chart beside it, and prints the
ratios the issue targets. Kafka alone (the tapper's producer config, 16 records in flight, at 4 KiB,
64 KiB and 1 MiB records: records/s, MB/s, p50/p99) is measured in the same run: the sync mode's
limit. Every target's CPU (user+sys of the server process, all its threads, from /proc, counted from
the end of fio's ramp to its exit) is reported per 100k 4k writes and per GiB at 64k and 1M: the cost
a hypervisor pays whatever else shares the machine. For tapstream-async the tapper's own gauges
(`tapstream_tapper_rpo_seconds`, `..._backlog_bytes`) are sampled during each run: RPO max, the backlog
at fio's end and the seconds it took to drain.

    make bench-tapper                       # or: .venv/bin/python bench/tapper.py [--runtime 10]
    .venv/bin/python bench/tapper.py --profile          # + py-spy profile of the sync 4k hot path
    .venv/bin/python bench/tapper.py --sweep            # + compression and chunk-size sweeps

The tapper's topics use the prefix `tapbench.` (not mirrored by MirrorMaker 2, so the recovery site
does not copy gigabytes of benchmark writes) and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import filecmp
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
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from server_stats import Sampler, cpu_by_thread, cpu_seconds
from tapstream.core.codec import make_codec
from tapstream.core.kafka import AsyncProducer, client_config, producer_config
from tapstream.core.ports import free_port
from tapstream.core.replay import replay_volume
from tapstream.core.settings import TapstreamSettings, load
from tapstream.tapper.settings import TapperSettings

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "bench" / "nbdkit_pwrite_plugin.py"
RESULTS = REPO / "bench" / "results"
TARGETS = [
    "nbdkit-file",
    "nbdkit-python",
    "tapstream-sync",
    "tapstream-async",
    "tapstream-sync-native",
    "tapstream-async-native",
]
WORKLOADS = {  # result key -> fio job
    "4k_randwrite": {"rw": "randwrite", "bs": "4k"},
    "64k_seqwrite": {"rw": "write", "bs": "64k"},
    "1m_seqwrite": {"rw": "write", "bs": "1m"},
}
BENCH_PREFIX = "tapbench"


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8) == b"NBDMAGIC":
                    return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(
        f"{what} did not listen on {port} within {timeout}s:\n{log.read_text()[-2000:]}"
    )


class Server:
    """One NBD server process serving `disk` on a TCP port."""

    def __init__(
        self,
        target: str,
        disk: Path,
        work: Path,
        settings: TapstreamSettings,
        env: dict[str, str],
        compression: str = "none",
        chunk: int = 1 << 20,
    ) -> None:
        self.target = target
        self.port = free_port()
        self.log = work / f"{target}-{self.port}.log"
        self.group = f"bench-{uuid.uuid4().hex[:8]}"
        self.topic = f"{BENCH_PREFIX}.writes.{self.group}"
        self.metrics_port = 0
        nbdkit = ["nbdkit", "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", str(self.port)]
        if target == "nbdkit-file":
            cmd, penv = [*nbdkit, "file", f"file={disk}"], dict(os.environ)
        elif target == "nbdkit-python":
            cmd, penv = [*nbdkit, "python", str(PLUGIN), f"file={disk}"], dict(os.environ)
        else:
            mode = target.split("-")[1]
            cmd = [sys.executable, "-m", "tapstream.tapper"]
            self.metrics_port = free_port()
            penv = {
                **env,
                "TAPSTREAM_METRICS_PORT": str(self.metrics_port),
                "TAPSTREAM_TOPIC_PREFIX": BENCH_PREFIX,
                "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                    [{"name": "vol", "path": str(disk), "group": self.group, "mode": mode}]
                ),
                "TAPSTREAM_TAPPER_LISTEN_PORT": str(self.port),
                "TAPSTREAM_TAPPER_STATE_DIR": str(work / f"state-{self.group}"),
                "TAPSTREAM_TAPPER_COMPRESSION": compression,
                "TAPSTREAM_TAPPER_CHUNK_BYTES": str(chunk),
                "TAPSTREAM_TAPPER_RETENTION_HOURS": "1",
                "TAPSTREAM_LOG_LEVEL": "WARNING",
                "TAPSTREAM_TAPPER_NATIVE": "on" if target.endswith("-native") else "off",
            }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=penv, stdout=out, stderr=out)
        wait_listening(self.port, self.proc, target, self.log)
        if target.startswith("tapstream"):
            keep_whole_topic(settings, self.topic)

    @property
    def uri(self) -> str:
        return f"nbd://127.0.0.1:{self.port}/vol"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def keep_whole_topic(settings: TapstreamSettings, topic: str) -> None:
    """The replay check reads the topic from its first event, but the local stack's brokers cap a
    partition at 2 GiB (`log.retention.bytes`), which a fast target outgrows in one run: its first
    segments went and the replay halted at the gap. The bench's topics keep everything."""
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.bytes", "-1", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin = AdminClient({"bootstrap.servers": settings.protected_bootstrap})
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)


RAMP_S = 2


def fio(
    uri: str,
    rw: str,
    bs: str,
    size: int,
    runtime: float,
    extra: list[str] | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """One fio run; with `pid`, also the server's CPU seconds over the measured part (after the
    ramp, when fio resets its counters) and `cpu_s_per_write`."""
    cmd = [
        "fio",
        "--name=bench",
        "--ioengine=nbd",
        f"--uri={uri}",
        f"--rw={rw}",
        f"--bs={bs}",
        "--iodepth=16",
        "--numjobs=1",
        "--time_based",
        f"--runtime={runtime}",
        f"--ramp_time={RAMP_S}",
        f"--size={size}",
        "--randrepeat=0",
        "--norandommap",
        "--output-format=json",
        *(extra or []),
    ]
    cpu: list[float] = []
    threads: list[dict[str, float]] = []
    timer = None

    broker = broker_pid()
    broker_cpu: list[float] = []

    def snapshot() -> None:
        assert pid is not None
        cpu.append(cpu_seconds(pid))
        threads.append(cpu_by_thread(pid))
        if broker is not None:
            broker_cpu.append(cpu_seconds(broker))

    if pid is not None:
        timer = threading.Timer(RAMP_S, snapshot)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if timer is not None:
        timer.start()
    stdout, stderr = proc.communicate(timeout=runtime + 120)
    if pid is not None:
        snapshot()
    if proc.returncode != 0:
        raise SystemExit(f"fio failed against {uri}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    job = json.loads(stdout[stdout.index("{") :])["jobs"][0]["write"]
    out = {
        "iops": job["iops"],
        "mbps": job["bw_bytes"] / 1e6,
        "p50_us": job["clat_ns"]["percentile"]["50.000000"] / 1000,
        "p99_us": job["clat_ns"]["percentile"]["99.000000"] / 1000,
        "errors": job.get("total_err", 0),
        "writes": job["total_ios"],
        "bytes": job["io_bytes"],
    }
    if len(cpu) == 2 and job["total_ios"]:
        out["cpu_s"] = cpu[1] - cpu[0]
        out["cpu_s_per_write"] = out["cpu_s"] / job["total_ios"]
        out["cpu_s_per_gib"] = out["cpu_s"] / (job["io_bytes"] / (1 << 30))
        if len(broker_cpu) == 2:  # what the protected broker took of the same cores meanwhile
            out["broker_cpu_s"] = broker_cpu[1] - broker_cpu[0]
        by = {k: round(threads[1][k] - threads[0][k], 2) for k in threads[1]}
        # Per thread only where the threads outlive the run: nbdkit's connection threads end with
        # fio's connections, and a thread that ended is in the process's total but in no thread.
        if abs(sum(by.values()) - out["cpu_s"]) <= 0.1 * out["cpu_s"] + 0.05:
            out["cpu_s_by_thread"] = by
    return out


def broker_pid() -> int | None:
    """The local stack's protected broker (`make up`), whose CPU shares the machine with fio and
    the server under test; None when the bench runs against another Kafka."""
    try:
        pid = int((REPO / ".tapstream/kafka-protected.pid").read_text().strip())
        cpu_seconds(pid)
    except (OSError, ValueError):
        return None
    return pid


def fresh_disk(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def run_target(
    target: str,
    disk: Path,
    size: int,
    work: Path,
    settings: TapstreamSettings,
    env: dict[str, str],
    runtime: float,
    topics: list[str],
    compression: str,
    chunk: int = 1 << 20,
    workloads: dict[str, dict[str, str]] = WORKLOADS,
    fio_extra: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    fresh_disk(disk, size)
    server = Server(target, disk, work, settings, env, compression, chunk)
    if target.startswith("tapstream"):
        topics.append(server.topic)
    try:
        for key, job in workloads.items():
            sampler = (
                Sampler(server.metrics_port, LAG_GAUGES).start() if server.metrics_port else None
            )
            out[key] = fio(
                server.uri, job["rw"], job["bs"], size, runtime, fio_extra, server.proc.pid
            )
            if sampler is not None:
                sampler.stop()
                sampler.sample()
                r = out[key]
                r["backlog_bytes_end"] = sampler.last.get(LAG_GAUGES[1], 0.0)
                # every workload starts from a drained stream, and the drain time is a figure
                r["drain_s"] = sampler.wait_until_zero(LAG_GAUGES, timeout=300)
                r["rpo_max_s"] = sampler.maxima.get(LAG_GAUGES[0], 0.0)
            print(
                f"  {target:16} {key:13} {out[key]['iops']:9.0f} IOPS {out[key]['mbps']:8.1f} MB/s "
                f"p99 {out[key]['p99_us']:8.0f} us  cpu {out[key].get('cpu_s', 0):5.1f} s "
                f"(broker {out[key].get('broker_cpu_s', 0):4.1f} s) "
                f"{out[key].get('cpu_s_by_thread', '')}"
                + (
                    f"  rpo max {out[key]['rpo_max_s']:.2f} s, backlog at end "
                    f"{out[key]['backlog_bytes_end'] / 1e6:.1f} MB, drained in "
                    f"{out[key]['drain_s'] or -1:.2f} s"
                    if "rpo_max_s" in out[key]
                    else ""
                ),
                flush=True,
            )
    finally:
        server.stop()
    if target.startswith("tapstream") and workloads is WORKLOADS:
        out["replay"] = replay_check(server, disk, size, work, settings)
    return out


def replay_check(
    server: Server, disk: Path, size: int, work: Path, settings: TapstreamSettings
) -> dict[str, Any]:
    """The stopped tapper's topic replayed onto a blank image: equal to the volume, or say so."""
    image = work / "replayed.img"
    t0 = time.monotonic()
    result = replay_volume(
        client_config(settings), server.topic, "vol", str(image), size, make_codec(settings)
    )
    identical = filecmp.cmp(disk, image, shallow=False)
    if not identical:
        print(f"  differing MiB of the volume: {differing_mib(disk, image)[:20]}", flush=True)
        print(server.log.read_text()[-3000:], flush=True)
    image.unlink()
    print(
        f"  {server.target:16} replay of {result.events} events: "
        + ("identical to the volume" if identical else "DIFFERS FROM THE VOLUME")
        + f" ({time.monotonic() - t0:.1f} s)",
        flush=True,
    )
    return {"identical": identical, "events": result.events, "last_seq": result.last_seq}


def differing_mib(a: Path, b: Path) -> list[int]:
    out = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for i in range(a.stat().st_size >> 20):
            if fa.read(1 << 20) != fb.read(1 << 20):
                out.append(i)
    return out


LAG_GAUGES = ("tapstream_tapper_rpo_seconds", "tapstream_tapper_backlog_bytes")


def kafka_alone(
    settings: TapstreamSettings, args: argparse.Namespace, when: str
) -> dict[str, dict[str, float]]:
    out = {}
    for name, nbytes in KAFKA_SIZES.items():
        k = kafka_produce_p99(settings, args.runtime, args.compression, record_bytes=nbytes)
        out[name] = k
        print(
            f"  kafka alone      {name:>4} records {k['records_per_s']:9.0f} /s "
            f"{k['mbps']:8.1f} MB/s p99 {k['p99_us']:8.0f} us (16 in flight, {when})",
            flush=True,
        )
    return out


def kafka_produce_p99(
    settings: TapstreamSettings,
    seconds: float,
    compression: str,
    linger_ms: float = TapperSettings.model_fields["tapper_linger_ms"].default,
    inflight: int = 16,
    record_bytes: int = 4096,
) -> dict[str, float]:
    """Kafka alone, the tapper's way: the shared AsyncProducer with the tapper's producer config,
    `record_bytes` records, `inflight` of them outstanding (like fio's iodepth); per-record
    produce-to-ack latency."""
    topic = f"{BENCH_PREFIX}.produce.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.protected_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1)]).values():
        fut.result(30)
    conf = producer_config(settings, linger_ms=linger_ms, compression=compression)
    conf["socket.nagle.disable"] = True
    payload = os.urandom(record_bytes)
    lat: list[float] = []

    async def run() -> None:
        producer = AsyncProducer(conf)
        await producer.start()
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                await producer.produce(topic, payload, key=b"vol")
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(inflight)))
        await producer.stop()

    uvloop.run(run())
    admin.delete_topics([topic])
    lat = lat[len(lat) // 10 :]  # drop the warm-up tenth (first metadata, first batches)
    q = statistics.quantiles(lat, n=100)
    per_s = len(lat) / (seconds * 0.9)
    return {
        "record_bytes": record_bytes,
        "records": len(lat),
        "records_per_s": per_s,
        "mbps": per_s * record_bytes / 1e6,
        "p50_us": q[49] * 1e6,
        "p99_us": q[98] * 1e6,
    }


KAFKA_SIZES = {"4k": 4096, "64k": 64 << 10, "1m": 1 << 20}  # the workloads' request sizes


def topic_bytes(log_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for d in log_dir.glob(f"{topic}-*") for f in d.glob("*.log"))


# --- profiling -----------------------------------------------------------------------------------
PROFILES = {  # what --profile samples: the two paths the targets are about
    "sync-4k-randwrite": ("tapstream-sync", "randwrite", "4k"),
    "async-64k-seqwrite": ("tapstream-async", "write", "64k"),
}


def profile(
    disk: Path,
    size: int,
    work: Path,
    settings: TapstreamSettings,
    env: dict[str, str],
    runtime: float,
    topics: list[str],
    compression: str,
    target: str = "tapstream-sync",
    rw: str = "randwrite",
    bs: str = "4k",
) -> dict[str, Any]:
    """py-spy on the tapper during one fio workload: top functions by own and total time."""
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy is missing: `make setup` installs it")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fresh_disk(disk, size)
    server = Server(target, disk, work, settings, env, compression)
    topics.append(server.topic)
    raw = work / f"profile-{target}-{rw}-{bs}.raw"
    try:
        rec = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(server.proc.pid),
                "--duration",
                str(int(runtime)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(
            0.5
        )  # let py-spy attach before the load starts (its own start-up, not a readiness wait)
        fio(server.uri, rw, bs, size, runtime)
        _, err = rec.communicate(timeout=runtime + 60)
        if rec.returncode != 0:
            raise SystemExit(f"py-spy failed ({rec.returncode}): {err.decode()[-800:]}")
    finally:
        server.stop()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    return {
        "samples": samples,
        "top_own": [(f, round(100 * n / samples, 1)) for f, n in own.most_common(15)],
        "top_total": [(f, round(100 * n / samples, 1)) for f, n in total.most_common(25)],
    }


# --- output --------------------------------------------------------------------------------------
def chart(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("iops_4k_randwrite", "4k randwrite IOPS"),
        ("mbps_64k_seqwrite", "64k seq write MB/s"),
        ("mbps_1m_seqwrite", "1M seq write MB/s"),
        ("p99_us_4k_randwrite", "4k randwrite p99 (µs)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    colors = ["#888888", "#4c72b0", "#dd8452", "#55a868"]
    for ax, (key, title) in zip(axes, metrics, strict=True):
        vals = [results[t][key] for t in TARGETS]
        ax.bar(range(len(TARGETS)), vals, color=colors)
        ax.set_xticks(range(len(TARGETS)), TARGETS, rotation=25, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    fig.suptitle("tapstream tapper vs nbdkit (fio nbd engine, iodepth 16)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runtime", type=float, default=10.0, help="seconds per fio run (after 2 s ramp)"
    )
    ap.add_argument(
        "--size", type=int, default=256 << 20, help="volume size in bytes (same for every target)"
    )
    ap.add_argument(
        "--compression", default="none", help="tapper producer compression for the main table"
    )
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument(
        "--profile", action="store_true", help="also profile the sync 4k hot path with py-spy"
    )
    ap.add_argument(
        "--sweep", action="store_true", help="also sweep producer compression and chunk size"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "tapper.json")
    args = ap.parse_args()
    for tool in ("fio", "nbdkit"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `make system-deps`")
    settings = load(TapstreamSettings)
    env = {
        **os.environ,
        "TAPSTREAM_ENV_FILE": os.environ.get(
            "TAPSTREAM_ENV_FILE", str(REPO / ".tapstream/local.env")
        ),
    }
    targets = args.targets.split(",")
    topics: list[str] = []
    extra: dict[str, Any] = {
        "runtime_s": args.runtime,
        "size_bytes": args.size,
        "iodepth": 16,
        "compression": args.compression,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
    }
    raw: dict[str, dict[str, dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="tapper-bench-", dir=REPO / ".tapstream"))
    disk = work / "disk.img"
    try:
        print(
            f"fio nbd engine, iodepth 16, {args.size >> 20} MiB volume, {args.runtime:.0f} s per run"
        )
        # Kafka alone before and after the targets, averaged: on a shared machine it moves by
        # 10-30% between runs minutes apart, and the sync ratios divide by it
        runs: list[dict[str, dict[str, float]]] = [kafka_alone(settings, args, "before")]
        for target in targets:
            raw[target] = run_target(
                target, disk, args.size, work, settings, env, args.runtime, topics, args.compression
            )
        runs.append(kafka_alone(settings, args, "after"))
        extra["kafka_alone_runs"] = runs
        extra["kafka_alone"] = {
            name: {key: statistics.fmean(r[name][key] for r in runs) for key in runs[0][name]}
            for name in KAFKA_SIZES
        }
        extra["kafka_produce_4k"] = extra["kafka_alone"]["4k"]
        if args.sweep:
            extra["sweep"] = sweep(disk, args.size, work, settings, env, args.runtime, topics)
        if args.profile:
            extra["profile"] = {}
            for name, (target, rw, bs) in PROFILES.items():
                print(f"  profiling {name} with py-spy ...", flush=True)
                extra["profile"][name] = profile(
                    disk,
                    args.size,
                    work,
                    settings,
                    env,
                    args.runtime,
                    topics,
                    args.compression,
                    target,
                    rw,
                    bs,
                )
    finally:
        if topics:
            with contextlib.suppress(Exception):
                AdminClient({"bootstrap.servers": settings.protected_bootstrap}).delete_topics(
                    [*topics, f"{BENCH_PREFIX}.control"]
                )
        shutil.rmtree(work, ignore_errors=True)
    replays = {t: r.pop("replay") for t, r in raw.items() if "replay" in r}
    extra["replay"] = replays
    results: dict[str, dict[str, float]] = {t: summary(r) for t, r in raw.items()}
    if "kafka_alone" in extra:
        ka = extra["kafka_alone"]
        results["kafka-alone"] = {
            "records_per_s_4k": round(ka["4k"]["records_per_s"], 1),
            "p50_us_4k": round(ka["4k"]["p50_us"], 1),
            "p99_us_4k": round(ka["4k"]["p99_us"], 1),
            "mbps_64k": round(ka["64k"]["mbps"], 1),
            "mbps_1m": round(ka["1m"]["mbps"], 1),
        }
    extra["raw"] = raw
    extra["loadavg_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_name(args.out.stem + "-extra.json").write_text(json.dumps(extra, indent=2) + "\n")
    if set(TARGETS) <= set(results):
        chart(results, args.out.with_suffix(".png"))
    report(results, extra)
    differ = [t for t, r in replays.items() if not r["identical"]]
    if differ:
        raise SystemExit(
            f"the replay of {differ} differs from the volume: an acknowledged write is lost"
        )


def summary(r: dict[str, dict[str, Any]]) -> dict[str, float]:
    """One target's row of tapper.json: the original four keys, CPU, and (async) lag figures."""
    out = {
        "iops_4k_randwrite": round(r["4k_randwrite"]["iops"], 1),
        "mbps_64k_seqwrite": round(r["64k_seqwrite"]["mbps"], 1),
        "mbps_1m_seqwrite": round(r["1m_seqwrite"]["mbps"], 1),
        "p99_us_4k_randwrite": round(r["4k_randwrite"]["p99_us"], 1),
        "p50_us_4k_randwrite": round(r["4k_randwrite"]["p50_us"], 1),
    }
    if "cpu_s_per_write" in r["4k_randwrite"]:
        out["cpu_s_per_100k_4k"] = round(r["4k_randwrite"]["cpu_s_per_write"] * 1e5, 3)
        out["cpu_s_per_gib_64k"] = round(r["64k_seqwrite"]["cpu_s_per_gib"], 3)
        out["cpu_s_per_gib_1m"] = round(r["1m_seqwrite"]["cpu_s_per_gib"], 3)
    for key, short in (("4k_randwrite", "4k"), ("64k_seqwrite", "64k"), ("1m_seqwrite", "1m")):
        w = r[key]
        if "broker_cpu_s" in w:  # the co-located broker's share of the same cores in that run
            out[f"broker_cpu_s_{short}"] = round(w["broker_cpu_s"], 2)
        if "rpo_max_s" in w:
            out[f"rpo_max_s_{short}"] = round(w["rpo_max_s"], 3)
            out[f"backlog_bytes_end_{short}"] = w["backlog_bytes_end"]
            out[f"drain_s_{short}"] = -1 if w["drain_s"] is None else round(w["drain_s"], 2)
    return out


def sweep(
    disk: Path,
    size: int,
    work: Path,
    settings: TapstreamSettings,
    env: dict[str, str],
    runtime: float,
    topics: list[str],
) -> dict[str, Any]:
    """Producer compression (random data and 50%-compressible data) and Write chunk size, sync mode."""
    log_dir = Path(settings_log_dir())
    out: dict[str, Any] = {"compression": {}, "chunk": {}}
    seq64 = {"64k_seqwrite": WORKLOADS["64k_seqwrite"]}
    for data, fio_extra in (
        ("random", []),
        ("compressible50", ["--buffer_compress_percentage=50", "--refill_buffers"]),
    ):
        for comp in ("none", "lz4", "zstd"):
            before = len(topics)
            r = run_target(
                "tapstream-sync",
                disk,
                size,
                work,
                settings,
                env,
                runtime,
                topics,
                comp,
                workloads=seq64,
                fio_extra=fio_extra,
            )["64k_seqwrite"]
            stored = topic_bytes(log_dir, topics[before]) if len(topics) > before else 0
            written = r["mbps"] * 1e6 * runtime
            out["compression"][f"{data}/{comp}"] = {
                "mbps_64k_seqwrite": round(r["mbps"], 1),
                "kafka_bytes_per_written_byte": round(stored / written, 3),
            }
    big = {"1m_seqwrite": WORKLOADS["1m_seqwrite"], "4m_seqwrite": {"rw": "write", "bs": "4m"}}
    for chunk in (256 << 10, 1 << 20, 4 << 20):
        r2 = run_target(
            "tapstream-sync",
            disk,
            size,
            work,
            settings,
            env,
            runtime,
            topics,
            "none",
            chunk=chunk,
            workloads=big,
        )
        out["chunk"][f"{chunk >> 10}KiB"] = {k: round(v["mbps"], 1) for k, v in r2.items()}
    return out


def settings_log_dir() -> str:
    props = REPO / ".tapstream/kafka/protected/server.properties"
    for line in props.read_text().splitlines():
        if line.startswith("log.dirs="):
            return line.split("=", 1)[1].split(",")[0]
    raise SystemExit(f"no log.dirs in {props}: is the local stack up (`make up`)?")


def target_lines(results: dict[str, dict[str, float]]) -> list[str]:
    """Issue 13's ratios against the same run's baselines, each with its target and a verdict."""
    sync, asy, py = (
        results.get("tapstream-sync"),
        results.get("tapstream-async"),
        results.get("nbdkit-python"),
    )
    file, kafka = results.get("nbdkit-file"), results.get("kafka-alone")
    rows: list[tuple[str, float | None, float, bool]] = []  # what, ratio, target, higher is better

    def add(what: str, a: float | None, b: float | None, target: float, up: bool = True) -> None:
        rows.append((what, a / b if a is not None and b else None, target, up))

    native = results.get("tapstream-sync-native")
    asy_native = results.get("tapstream-async-native")
    for name, row in (("sync", sync), ("sync native", native)):
        if not row or not kafka:
            continue
        add(
            f"{name} 4k IOPS / Kafka alone 4 KiB records/s",
            row["iops_4k_randwrite"],
            kafka["records_per_s_4k"],
            0.8,
        )
        add(
            f"{name} 4k p99 / Kafka alone 4 KiB p99",
            row["p99_us_4k_randwrite"],
            kafka["p99_us_4k"],
            1.5,
            False,
        )
        add(
            f"{name} 64k MB/s / Kafka alone 64 KiB MB/s",
            row["mbps_64k_seqwrite"],
            kafka["mbps_64k"],
            0.8,
        )
        add(
            f"{name} 1M MB/s / Kafka alone 1 MiB MB/s",
            row["mbps_1m_seqwrite"],
            kafka["mbps_1m"],
            0.8,
        )
    for name, row in (("async", asy), ("async native", asy_native)):
        if row and py:
            add(
                f"{name} 4k IOPS / nbdkit-python",
                row["iops_4k_randwrite"],
                py["iops_4k_randwrite"],
                1.0,
            )
        if row and file:
            add(
                f"{name} 64k MB/s / nbdkit-file",
                row["mbps_64k_seqwrite"],
                file["mbps_64k_seqwrite"],
                0.5,
            )
    for name, row in (
        ("sync", sync),
        ("async", asy),
        ("sync native", native),
        ("async native", asy_native),
    ):
        if row and py:
            add(
                f"{name} CPU per 4k write / nbdkit-python's",
                row.get("cpu_s_per_100k_4k"),
                py.get("cpu_s_per_100k_4k"),
                2.0,
                False,
            )
    lines = []
    for what, ratio, target, up in rows:
        if ratio is None:
            lines.append(f"{what:48} n/a")
            continue
        ok = ratio >= target if up else ratio <= target
        sign = ">=" if up else "<="
        lines.append(
            f"{what:48} {ratio:5.2f}x  (target {sign} {target}x: {'met' if ok else 'NOT met'})"
        )
    for name, row in (("async", asy), ("async native", asy_native)):
        if row and "rpo_max_s_4k" in row:
            lines.append(rpo_line(name, row))
    return lines


def rpo_line(name: str, asy: dict[str, float]) -> str:
    return (
        f"{name} RPO max 4k/64k/1M: "
        + ", ".join(f"{asy[f'rpo_max_s_{k}']:.2f} s" for k in ("4k", "64k", "1m"))
        + "; backlog at fio's end: "
        + ", ".join(f"{asy[f'backlog_bytes_end_{k}'] / 1e6:.1f} MB" for k in ("4k", "64k", "1m"))
        + "; drained in: "
        + ", ".join(f"{asy[f'drain_s_{k}']:.1f} s" for k in ("4k", "64k", "1m"))
    )


def report(results: dict[str, dict[str, float]], extra: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tapper benchmark (fio nbd, iodepth 16)")
    cols = (
        "target",
        "4k IOPS",
        "64k MB/s",
        "1M MB/s",
        "4k p99 µs",
        "CPU s/100k 4k",
        "CPU s/GiB 64k",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for t, r in results.items():
        if t == "kafka-alone":
            continue
        table.add_row(
            t,
            f"{r['iops_4k_randwrite']:,.0f}",
            f"{r['mbps_64k_seqwrite']:,.1f}",
            f"{r['mbps_1m_seqwrite']:,.1f}",
            f"{r['p99_us_4k_randwrite']:,.0f}",
            f"{r.get('cpu_s_per_100k_4k', float('nan')):.2f}",
            f"{r.get('cpu_s_per_gib_64k', float('nan')):.2f}",
        )
    console = Console(width=120)
    console.print(table)
    runs = extra.get("kafka_alone_runs", [])
    if len(runs) == 2:
        console.print(
            "Kafka alone before / after the targets (the ratios use the mean): "
            + ", ".join(
                f"{name} {runs[0][name]['records_per_s']:,.0f} / "
                f"{runs[1][name]['records_per_s']:,.0f} rec/s"
                for name in KAFKA_SIZES
            )
        )
    for line in target_lines(results):
        console.print(line)
    if "sweep" in extra:
        console.print_json(json.dumps(extra["sweep"]))
    for name, p in extra.get("profile", {}).items():
        console.print(f"py-spy, {name}, {p['samples']} samples; top by own time:")
        for f, pct in p["top_own"][:12]:
            console.print(f"  {pct:5.1f}%  {f}")
        console.print("top by total time:")
        for f, pct in p["top_total"][:20]:
            console.print(f"  {pct:5.1f}%  {f}")


if __name__ == "__main__":
    main()

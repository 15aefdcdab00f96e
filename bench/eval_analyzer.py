"""`make eval-analyzer`: the encryption analyzer on benign and malicious file workloads.

One protection group with one ext4 volume per case behind the real tapper, one encryption analyzer
(faust) on the group's write topic. Each volume starts as an ext4 made from a text/source tree
(written with nbdcopy through the tapper), then a checkpoint, then each case runs on its own volume,
mounted through the tapper with nbdfuse + fuse2fs. Then the group's write stream is replayed through
the same detector offline (detector_replay.py) for each volume's score over time.

Writes bench/results/analyzer.json: `cases`, one object per case with `malicious`, `alerts` (the
live service's), `detection_delay_s` (alert publication minus workload start), `peak_score` (1.0
alerts), `margin` (how far on the right side of 1.0: peak - 1 for malicious, 1 - peak for benign;
the aim is >= 0.2), `replay_delay_s`; and `sweep`, detection and false-alarm rates per threshold,
also drawn as bench/results/analyzer-roc.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import detector_replay
import evaluation as ev  # bench/evaluation.py, beside this script
from tapstream.analyzer import published
from tapstream.core.codec import make_codec
from tapstream.core.kafka import client_config
from tapstream.core.ports import free_port
from tapstream.core.replay import read_stream
from tapstream.core.settings import TapstreamSettings, load
from tapstream.vdsa.coordinator import create_checkpoint

SIZE = 160 * 1024 * 1024
OUT = Path(__file__).parent / "results" / "analyzer.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where the per-case results go")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    cases = {c: v for c, v in ev.CASES.items() if not args.cases or c in args.cases.split(",")}
    settings = load(TapstreamSettings)
    group = f"eval-{time.strftime('%H%M%S')}"
    work = Path(tempfile.mkdtemp(prefix="tapstream-eval-"))
    console = Console()
    content = work / "content"
    ev.text_tree(content / "data", 8 << 20)
    names = {case: case.replace("-", "")[:24] for case in cases}
    vols = {}
    for vol in names.values():
        vols[vol] = work / f"{vol}.img"
        with open(vols[vol], "wb") as f:
            f.truncate(SIZE)
    port = free_port()
    env = {**os.environ, "TAPSTREAM_LOG_FORMAT": "console"}
    tapper_env = {
        **env,
        "TAPSTREAM_TAPPER_LISTEN_PORT": str(port),
        "TAPSTREAM_TAPPER_STATE_DIR": str(work / "tapper"),
        "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
            [{"name": v, "path": str(p), "group": group, "mode": "sync"} for v, p in vols.items()]
        ),
    }
    procs: list[subprocess.Popen[bytes]] = []
    uri = {v: f"nbd://127.0.0.1:{port}/{v}" for v in vols}
    try:
        # The tapper can exit at start while a just-created topic has no partition leader yet
        # (NOT_LEADER_FOR_PARTITION from its seq lookup); a second start finds the topic ready.
        for _attempt in range(3):
            with open(work / "tapper.log", "ab") as log:
                tapper = subprocess.Popen(
                    [sys.executable, "-m", "tapstream.tapper"],
                    env=tapper_env,
                    stdout=log,
                    stderr=log,
                )
            ev.wait_for(
                "the tapper",
                lambda t=tapper: (
                    t.poll() is not None
                    or subprocess.run(
                        ["nbdinfo", "--size", next(iter(uri.values()))], capture_output=True
                    ).returncode
                    == 0
                ),
                timeout=60,
            )
            if tapper.poll() is None:
                procs.append(tapper)
                break
        else:
            raise SystemExit(f"the tapper did not start; see {work / 'tapper.log'}")
        with open(work / "analyzer.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tapstream.analyzer", "--group", group],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
        fs = work / "fs.img"
        ev.make_fs_image(fs, SIZE, content)
        for v in vols:
            ev.sh("nbdcopy", str(fs), uri[v])
        asyncio.run(create_checkpoint(settings, group, "before-eval"))
        started, durations = {}, {}
        for case, (malicious, workload) in cases.items():
            v = names[case]
            console.print(f"▸ {case} on {v} ({'malicious' if malicious else 'benign'})")
            started[case] = time.time()
            with ev.mounted(uri[v], work / f"m-{v}") as mnt:
                workload(mnt)
            durations[case] = time.time() - started[case]
        consumer = f"{settings.topic_prefix}-analyzer.encryption.{group}"
        topic = settings.topic(f"writes.{group}")
        ev.wait_for(
            "the analyzer to catch up",
            lambda: published.committed_lag(settings, consumer, topic) == 0,
            timeout=600,
            interval=1,
        )
        alerts = published.alerts_of(settings, group)
        console.print("replaying the write stream through the detector ...")
        traces = detector_replay.replay(
            (
                rec
                for _p, _o, rec in read_stream(client_config(settings), topic, make_codec(settings))
            ),
            {names[c]: int(started[c] * 1e6) for c in cases},
        )
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    results = []
    for case, (malicious, _) in cases.items():
        mine = [a for a in alerts if a["volume"] == names[case]]
        delay = (int(mine[0]["details"]["published_ts"]) / 1e6 - started[case]) if mine else None
        results.append(
            {
                "case": case,
                "volume": names[case],
                "malicious": malicious,
                "alerts": len(mine),
                "detection_delay_s": round(delay, 2) if delay is not None else None,
                "workload_s": round(durations[case], 2),
                "encrypted_share": round(mine[0]["encrypted_share"], 3) if mine else None,
                "last_clean_checkpoint": mine[0]["last_clean_checkpoint"] if mine else None,
                "correct": (len(mine) > 0) == malicious,
                "peak_score": round(traces[names[case]].peak, 3),
                "margin": round(
                    traces[names[case]].peak - 1 if malicious else 1 - traces[names[case]].peak, 3
                ),
                "replay_delay_s": traces[names[case]].delay_s(),
            }
        )
    roc = detector_replay.sweep(
        {names[c]: traces[names[c]] for c in cases}, {names[c]: m for c, (m, _) in cases.items()}
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cases": results, "sweep": roc}, indent=2) + "\n")
    roc_chart(roc, results, args.out.with_name(args.out.stem + "-roc.png"))
    table = Table(
        "case",
        "malicious",
        "alerts",
        "detection delay s",
        "workload s",
        "share",
        "peak score",
        "margin",
        "correct",
        title=f"encryption analyzer, group {group}",
    )
    for r in results:
        table.add_row(
            r["case"],
            str(r["malicious"]),
            str(r["alerts"]),
            str(r["detection_delay_s"] or "-"),
            str(r["workload_s"]),
            str(r["encrypted_share"] or "-"),
            f"{r['peak_score']:.2f}",
            f"{r['margin']:+.2f}" if r["margin"] >= 0.2 else f"[red]{r['margin']:+.2f}[/]",
            "yes" if r["correct"] else "[red]no[/]",
        )
    console.print(table)
    sweep_table = Table("threshold", "detection rate", "false-alarm rate", title="threshold sweep")
    for row in roc:
        sweep_table.add_row(
            f"{row['threshold']:.2f}",
            f"{row['detection_rate']:.2f}",
            f"{row['false_alarm_rate']:.2f}",
        )
    console.print(sweep_table)
    console.print(f"wrote {args.out}; logs in {work}")
    shutil.rmtree(work / "content", ignore_errors=True)


def roc_chart(roc: list[dict[str, float]], results: list[dict[str, object]], path: Path) -> None:
    """The threshold sweep as a ROC curve, and each case's peak score against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    a.plot([r["false_alarm_rate"] for r in roc], [r["detection_rate"] for r in roc], "o-")
    for r in roc:
        a.annotate(f"{r['threshold']:g}", (r["false_alarm_rate"], r["detection_rate"]), fontsize=7)
    a.set_xlabel("false-alarm rate (benign cases)")
    a.set_ylabel("detection rate (malicious cases)")
    a.set_xlim(-0.05, 1.05)
    a.set_ylim(-0.05, 1.05)
    a.set_title("threshold sweep (score scaled; 1.0 is the default)")
    names = [str(r["case"]) for r in results]
    peaks = [float(r["peak_score"]) for r in results]  # type: ignore[arg-type]
    colors = ["#c44e52" if r["malicious"] else "#55a868" for r in results]
    b.barh(range(len(names)), peaks, color=colors)
    b.axvline(1.0, color="k", linewidth=1)
    b.axvspan(0.8, 1.2, color="#dddddd", zorder=0)
    b.set_yticks(range(len(names)), names, fontsize=7)
    b.set_xscale("symlog", linthresh=1)
    b.set_title("peak score per case (red: malicious; grey: threshold ±20%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()

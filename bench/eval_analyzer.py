"""`make eval-analyzer`: the encryption analyzer on benign and malicious file workloads.

One protection group with one ext4 volume per case behind the real tapper, one encryption analyzer
(faust) on the group's write topic. Each volume starts as an ext4 made from a text/source tree
(written with nbdcopy through the tapper), then a checkpoint, then each case runs on its own volume,
mounted through the tapper with nbdfuse + fuse2fs. Writes bench/results/analyzer.json: one object
per case with `malicious`, `alerts`, `detection_delay_s` (alert publication minus workload start).
"""

from __future__ import annotations

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

import evaluation as ev  # bench/evaluation.py, beside this script
from tapstream.analyzer import published
from tapstream.core.ports import free_port
from tapstream.core.settings import TapstreamSettings, load
from tapstream.vdsa.coordinator import create_checkpoint

SIZE = 160 * 1024 * 1024
OUT = Path(__file__).parent / "results" / "analyzer.json"


def main() -> None:
    settings = load(TapstreamSettings)
    group = f"eval-{time.strftime('%H%M%S')}"
    work = Path(tempfile.mkdtemp(prefix="tapstream-eval-"))
    console = Console()
    content = work / "content"
    ev.text_tree(content / "data", 8 << 20)
    names = {case: case.replace("-", "")[:20] for case in ev.CASES}
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
        for case, (malicious, workload) in ev.CASES.items():
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
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    results = []
    for case, (malicious, _) in ev.CASES.items():
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
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(
        "case",
        "malicious",
        "alerts",
        "detection delay s",
        "workload s",
        "share",
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
            "yes" if r["correct"] else "[red]no[/]",
        )
    console.print(table)
    console.print(f"wrote {OUT}; logs in {work}")
    shutil.rmtree(work / "content", ignore_errors=True)


if __name__ == "__main__":
    main()

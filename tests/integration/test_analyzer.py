"""The encryption analyzer end to end: ext4 volumes behind the real tapper, faust app on the stream.

In-place AES encryption of one volume's files raises one alert within 30 s of the onset, naming
that volume and a checkpoint taken before the onset; the other volume, which gets a source tree and
compressed files copied in, raises none. SIGTERM stops the analyzer cleanly and a restart resumes
from the committed position without alerting again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import pytest
from bench import evaluation as ev

from tapstream.analyzer import published
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import start_service, stop, wait_until
from .tapper_harness import run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 64 * 1024 * 1024


def test_in_place_encryption_alerts_and_benign_work_does_not(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    content = tmp_path / "content"
    assert ev.text_tree(content / "data", 6 << 20) > 4 << 20
    vols = {n: tmp_path / f"{n}.img" for n in ("benign", "victim")}
    for v in vols.values():
        with open(v, "wb") as f:
            f.truncate(SIZE)
    tapper = start_tapper(stack, tmp_path, group, vols)
    env = {
        "TAPSTREAM_ANALYZER_GROUP": group,
        "TAPSTREAM_LOG_FORMAT": "console",
    }
    analyzer = start_service(stack, "tapstream.analyzer", tmp_path, env, "analyzer")
    settings = stack.settings
    consumer_group = f"{settings.topic_prefix}-analyzer.encryption.{group}"
    try:
        for name in vols:
            fs = tmp_path / f"{name}-fs.img"
            ev.make_fs_image(fs, SIZE, content)
            run(["nbdcopy", str(fs), tapper.uri(name)])
        clean = asyncio.run(create_checkpoint(settings, group, "before"))
        with ev.mounted(tapper.uri("benign"), tmp_path / "m-benign") as mnt:
            ev.copy_text_tree(mnt, limit=4 << 20)
            ev.compressed_files(mnt)
        onset = time.time()
        with ev.mounted(tapper.uri("victim"), tmp_path / "m-victim") as mnt:
            ev.encrypt_in_place(mnt)
        alerts = wait_until(
            "an alert",
            lambda: published.alerts_of(settings, group),
            timeout=30 - (time.time() - onset),
        )
        (alert,) = alerts
        assert alert["volume"] == "victim" and alert["kind"] == "encryption"
        assert alert["last_clean_checkpoint"] == clean
        assert int(alert["details"]["last_clean_ts"]) < alert["onset_ts"]
        assert alert["onset_ts"] >= onset * 1e6 - 1e6 and alert["encrypted_share"] >= 0.15
        assert alert["score"] >= 1.0  # the score alerts at 1.0 (evidence and share both reached)
        assert int(alert["details"]["published_ts"]) / 1e6 - onset < 30
        # It names the command that lists the files changed since the last clean checkpoint.
        assert alert["details"]["changed_files_command"] == (
            f"tapstream files {group} victim --checkpoint {clean} diff --to latest"
        )
        # The checkpoint is asked to be tagged and kept.
        tags = published.read_topic(
            settings,
            settings.topic("control"),
            "Command",
            lambda c: c["group"] == group and c["kind"] == "CHECKPOINT_TAG",
        )
        assert [(t["checkpoint_id"], t["tag"], t["args"]["alert_id"]) for t in tags] == [
            (clean, "last-clean", alert["id"])
        ]
        # Clean shutdown on SIGTERM, then a restart resumes without a second alert.
        wait_until(
            "offsets committed",
            lambda: (
                published.committed_lag(settings, consumer_group, settings.topic(f"writes.{group}"))
                == 0
            ),
            timeout=30,
        )
        analyzer.send_signal(signal.SIGTERM)
        assert analyzer.wait(30) == 0
        with ev.mounted(
            tapper.uri("benign"), tmp_path / "m-benign2"
        ) as mnt:  # more work while it is down
            ev.copy_text_tree(mnt, limit=1 << 20)
        analyzer = start_service(stack, "tapstream.analyzer", tmp_path, env, "analyzer2")
        wait_until(
            "the restarted analyzer caught up",
            lambda: (
                published.committed_lag(settings, consumer_group, settings.topic(f"writes.{group}"))
                == 0
            ),
            timeout=60,
        )
        assert [a["id"] for a in published.alerts_of(settings, group)] == [alert["id"]]
        log = (tmp_path / "analyzer2.log").read_text()
        assert "alert" not in log.lower().replace("alerts", ""), log[-2000:]
        # It shows as a consumer group of the write topic (`tapstream status` lists the same per group).
        status = run(
            [sys.executable, "-m", "tapstream.cli.main", "analyze", "list", "--json"], env=stack.env
        )
        mine = [a for a in json.loads(status.stdout) if a["group"] == group]
        assert mine and mine[0]["analyzer"] == "encryption" and mine[0]["lag"] == 0
    finally:
        stop(analyzer)
        assert tapper.stop() == 0

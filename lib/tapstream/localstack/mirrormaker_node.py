"""The dedicated MirrorMaker 2 process between the two local clusters."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tapstream.core.kafka import client_config
from tapstream.core.settings import TapstreamSettings
from tapstream.localstack import processes, readiness
from tapstream.localstack.jvm import java_command, java_env
from tapstream.localstack.properties import log4j2_config, render
from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties

MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"


@dataclass(frozen=True)
class MirrorMakerNode:
    home: Path  # <state>/mirrormaker: mm2.properties, log4j2.properties
    pid_file: Path
    log: Path

    @property
    def conf(self) -> Path:
        return self.home / "mm2.properties"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, marker=str(self.conf))

    def start(
        self,
        settings: TapstreamSettings,
        classpath: str,
        heap: str,
        tuning: MirrorTuning | None = None,
    ) -> bool:
        """Start MirrorMaker 2 unless it runs with this configuration; True if this call started it.
        A running one whose mm2.properties differs (settings or a newer tapstream changed the flows)
        is restarted: it resumes from its committed offsets, so nothing is mirrored twice or lost."""
        text = render(mirrormaker_properties(settings, tuning or MirrorTuning()))
        if self.pid() is not None:
            if self.conf.exists() and self.conf.read_text() == text:
                return False
            self.stop()
        self.home.mkdir(parents=True, exist_ok=True)
        # The file may hold SASL credentials when pointed at real clusters.
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        log_conf = self.home / "log4j2.properties"
        log_conf.write_text(log4j2_config(str(self.log)))
        cmd = java_command(heap, log_conf, classpath, MAIN, str(self.conf))
        processes.start(cmd, self.pid_file, self.log.with_suffix(".out"), env=java_env())
        return True

    def stop(self) -> bool:
        return processes.stop(self.pid_file, marker=str(self.conf), timeout_s=30)

    def wait_ready(
        self,
        settings: TapstreamSettings,
        since: float,
        timeout_s: float,
        say: Callable[[str], None] | None = None,
        secured: bool = False,
    ) -> None:
        """Return when both directions replicate: each cluster holds a heartbeat mirrored from the
        other that was emitted at or after `since` (epoch seconds); older ones may be left over
        from an earlier run. Raises readiness.NotReady naming the log file. `secured`: the probe
        logs in with `settings`' Kafka credentials (the secured stack)."""
        conf = client_config(settings) if secured else None
        p = (settings.protected_alias, settings.protected_bootstrap)
        r = (settings.recovery_alias, settings.recovery_bootstrap)
        for (source, _), (target, target_bootstrap) in ((p, r), (r, p)):
            topic = f"{source}.heartbeats"
            if say is not None:
                say(f"waiting for mirrormaker 2 {source} -> {target}")
            readiness.wait_for(
                f"mirrormaker 2 {source}->{target} (fresh heartbeats mirrored as {topic} on {target})",
                partial(readiness.fresh_records, target_bootstrap, topic, since, conf),
                timeout_s,
                self.log,
                running=self.pid,
            )

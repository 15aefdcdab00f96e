"""The two-site stack: start (idempotent), stop (no orphans), status, and Kafka's own tools."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tapstream.localstack import postgres, processes, readiness
from tapstream.localstack.classpath import resolve
from tapstream.localstack.properties import (
    broker_properties,
    log4j2_config,
    mirrormaker_properties,
    render,
)
from tapstream.localstack.settings import LocalStackSettings

SITES = ("protected", "recovery")

# Kafka's own CLI tools by their script names (Kafka 4.x classes).
TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}


@dataclass(frozen=True)
class Component:
    name: str
    kind: str  # kafka | mirrormaker | postgres
    port: int | None
    pid: int | None
    log: Path

    @property
    def up(self) -> bool:
        return self.pid is not None


class Stack:
    """Everything lives under `settings.state_dir`; the Kafka jars under `settings.maven_repo`."""

    def __init__(self, settings: LocalStackSettings) -> None:
        self.s = settings
        self.root = settings.root
        self.logs = self.root / "logs"

    # --- addresses -----------------------------------------------------------------------------
    def kafka_port(self, site: str) -> int:
        return self.s.protected_kafka_port if site == "protected" else self.s.recovery_kafka_port

    def bootstrap(self, site: str) -> str:
        return f"127.0.0.1:{self.kafka_port(site)}"

    def pg_port(self, site: str) -> int:
        return self.s.protected_pg_port if site == "protected" else self.s.recovery_pg_port

    def database_url(self, site: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port(site)}/postgres"

    def env(self) -> dict[str, str]:
        """What `local.env` holds: every service finds both sites through these."""
        return {
            "TAPSTREAM_PROTECTED_BOOTSTRAP": self.bootstrap("protected"),
            "TAPSTREAM_RECOVERY_BOOTSTRAP": self.bootstrap("recovery"),
            "TAPSTREAM_PROTECTED_DATABASE_URL": self.database_url("protected"),
            "TAPSTREAM_RECOVERY_DATABASE_URL": self.database_url("recovery"),
            "TAPSTREAM_STATE_DIR": str(self.root),
        }

    # --- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: object = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        say = progress if callable(progress) else (lambda _msg: None)
        say("resolving Kafka jars (Maven Central, cached)")
        cp = resolve(self.root, self.s.maven_repo)
        for site in SITES:
            say(f"postgres {site}")
            postgres.start(self.root / "pg" / site, self.pg_port(site), self.logs / f"postgres-{site}.log")
        for site in SITES:
            say(f"kafka {site}")
            self._start_kafka(site, cp)
        for site in SITES:
            readiness.wait_for(
                f"kafka {site} ({self.bootstrap(site)})",
                lambda site=site: readiness.kafka_answers(self.bootstrap(site)),
                self.s.ready_timeout_s, self.logs / f"kafka-{site}.log",
            )
            readiness.wait_for(
                f"postgres {site}",
                lambda site=site: readiness.postgres_answers(self.database_url(site)),
                self.s.ready_timeout_s, self.logs / f"postgres-{site}.log",
            )
        say("mirrormaker 2")
        self._start_mirrormaker(cp)
        # MM2 is ready when each direction has mirrored the other side's heartbeats.
        for source, target in (("protected", "recovery"), ("recovery", "protected")):
            topic = f"{self._alias(source)}.heartbeats"
            readiness.wait_for(
                f"mirrormaker 2 {source}->{target} (heartbeats mirrored as {topic})",
                lambda t=target, topic=topic: readiness.topic_has_records(self.bootstrap(t), topic),
                self.s.ready_timeout_s, self.logs / "mirrormaker.log",
            )
        env_file = self.root / "local.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))

    def down(self) -> list[str]:
        stopped = []
        if processes.stop(self.root / "mirrormaker.pid"):
            stopped.append("mirrormaker")
        for site in SITES:
            if processes.stop(self.root / f"kafka-{site}.pid", timeout_s=60):
                stopped.append(f"kafka-{site}")
        for site in SITES:
            if postgres.stop(self.root / "pg" / site):
                stopped.append(f"postgres-{site}")
        return stopped

    def status(self) -> list[Component]:
        comps = [
            Component(f"kafka-{site}", "kafka", self.kafka_port(site),
                      processes.read_pid(self.root / f"kafka-{site}.pid"), self.logs / f"kafka-{site}.log")
            for site in SITES
        ]
        comps.append(Component("mirrormaker", "mirrormaker", None,
                               processes.read_pid(self.root / "mirrormaker.pid"), self.logs / "mirrormaker.log"))
        comps += [
            Component(f"postgres-{site}", "postgres", self.pg_port(site),
                      postgres.pid(self.root / "pg" / site), self.logs / f"postgres-{site}.log")
            for site in SITES
        ]
        return comps

    def tool(self, site: str, args: list[str]) -> int:
        """Run one of Kafka's own CLI tools with --bootstrap-server set to `site`."""
        if not args:
            raise SystemExit(f"name a tool: {', '.join(TOOLS)}")
        name = args[0].removesuffix(".sh")
        if name not in TOOLS:
            raise SystemExit(f"unknown tool {args[0]!r}; known: {', '.join(TOOLS)}")
        cp = resolve(self.root, self.s.maven_repo)
        rest = args[1:]
        if not any(a.startswith("--bootstrap") for a in rest):
            rest = ["--bootstrap-server", self.bootstrap(site), *rest]
        log_conf = self._write(self.root / "tools-log4j2.properties", log4j2_config(str(self.logs / "tools.log")))
        cmd = ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log_conf}", "-cp", cp, TOOLS[name], *rest]
        return subprocess.call(cmd)

    # --- pieces --------------------------------------------------------------------------------
    def _alias(self, site: str) -> str:
        return self.s.protected_alias if site == "protected" else self.s.recovery_alias

    def _write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _java(self, heap: str, log_conf: Path, cp: str, main: str, *args: str) -> list[str]:
        return ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log_conf}",
                "-cp", cp, main, *args]

    def _start_kafka(self, site: str, cp: str) -> None:
        pid_file = self.root / f"kafka-{site}.pid"
        if processes.read_pid(pid_file) is not None:
            return
        node_dir = self.root / "kafka" / site
        data = node_dir / "data"
        props = broker_properties(1, self.kafka_port(site), str(data))
        conf = self._write(node_dir / "server.properties", render(props))
        log_conf = self._write(node_dir / "log4j2.properties", log4j2_config(str(self.logs / f"kafka-{site}.log")))
        if not (data / "meta.properties").exists():
            cluster_id_file = node_dir / "cluster.id"
            if not cluster_id_file.exists():
                cluster_id_file.write_text(_kafka_uuid())
            fmt = subprocess.run(
                ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log_conf}", "-cp", cp,
                 "kafka.tools.StorageTool", "format", "-t", cluster_id_file.read_text().strip(),
                 "-c", str(conf), "--standalone", "--ignore-formatted"],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise RuntimeError(f"formatting kafka {site} storage failed:\n{fmt.stdout}{fmt.stderr}")
        processes.start(self._java(self.s.kafka_heap, log_conf, cp, "kafka.Kafka", str(conf)),
                        pid_file, self.logs / f"kafka-{site}.out", env=_java_env())

    def _start_mirrormaker(self, cp: str) -> None:
        pid_file = self.root / "mirrormaker.pid"
        if processes.read_pid(pid_file) is not None:
            return
        mm_dir = self.root / "mirrormaker"
        props = mirrormaker_properties(
            self.bootstrap("protected"), self.bootstrap("recovery"),
            protected_alias=self.s.protected_alias, recovery_alias=self.s.recovery_alias,
            topic_prefix=self.s.topic_prefix,
        )
        conf = self._write(mm_dir / "mm2.properties", render(props))
        log_conf = self._write(mm_dir / "log4j2.properties", log4j2_config(str(self.logs / "mirrormaker.log")))
        processes.start(
            self._java(self.s.mirrormaker_heap, log_conf, cp,
                       "org.apache.kafka.connect.mirror.MirrorMaker", str(conf)),
            pid_file, self.logs / "mirrormaker.out", env=_java_env(),
        )


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like `random-uuid`)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _java_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    return env

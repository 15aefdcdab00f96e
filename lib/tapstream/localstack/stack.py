"""The two-site stack: start (idempotent), stop (no orphans), status, and Kafka's own tools."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import SecretStr

from tapstream.core.settings import TapstreamSettings
from tapstream.localstack import postgres, readiness
from tapstream.localstack.classpath import resolve
from tapstream.localstack.jvm import java_env
from tapstream.localstack.kafka_node import KafkaNode
from tapstream.localstack.mirrormaker_node import MirrorMakerNode
from tapstream.localstack.properties import log4j2_config
from tapstream.localstack.settings import LocalStackSettings

SITES = ("protected", "recovery")
# A running MirrorMaker 2 whose heartbeats stop crossing for this long is restarted by `up`.
STUCK_AFTER_S = 20.0


@dataclass(frozen=True)
class Tool:
    main: str
    bootstrap_flag: str | None = "--bootstrap-server"  # None: the tool talks to no broker


# Kafka's own CLI tools by their script names (Kafka 4.1 classes, checked against the jars).
TOOLS = {
    "kafka-topics": Tool("org.apache.kafka.tools.TopicCommand"),
    "kafka-console-consumer": Tool("org.apache.kafka.tools.consumer.ConsoleConsumer"),
    "kafka-console-producer": Tool("org.apache.kafka.tools.ConsoleProducer"),
    "kafka-consumer-groups": Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    "kafka-get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell"),
    "kafka-configs": Tool("kafka.admin.ConfigCommand"),
    "kafka-metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand"),
    "kafka-log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand"),
    "kafka-delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand"),
    "kafka-broker-api-versions": Tool("org.apache.kafka.tools.BrokerApiVersionsCommand"),
    "kafka-producer-perf-test": Tool(
        "org.apache.kafka.tools.ProducerPerformance", "--producer-props"
    ),
    "kafka-consumer-perf-test": Tool("org.apache.kafka.tools.ConsumerPerformance"),
    "kafka-dump-log": Tool("kafka.tools.DumpLogSegments", None),
}


def with_bootstrap(tool: Tool, args: list[str], bootstrap: str) -> list[str]:
    """`args` with the site's bootstrap servers added, unless the caller named some."""
    if tool.bootstrap_flag is None or any("bootstrap" in a or a == "--broker-list" for a in args):
        return args
    if tool.bootstrap_flag == "--producer-props":  # key=value pairs, one option for all of them
        if "--producer-props" in args:
            i = args.index("--producer-props") + 1
            return [*args[:i], f"bootstrap.servers={bootstrap}", *args[i:]]
        return [*args, "--producer-props", f"bootstrap.servers={bootstrap}"]
    return [tool.bootstrap_flag, bootstrap, *args]


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
        self.kafka = {
            site: KafkaNode(site, self.kafka_port(site), self.root / "kafka" / site,
                            self.logs / f"kafka-{site}.log")
            for site in SITES
        }  # fmt: skip
        self.mirrormaker = MirrorMakerNode(
            self.root / "mirrormaker", self.root / "mirrormaker.pid", self.logs / "mirrormaker.log"
        )

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

    def client_settings(self) -> TapstreamSettings:
        """Settings of a tapstream process on this stack (MirrorMaker 2 is generated from them)."""
        shared = {name: getattr(self.s, name) for name in TapstreamSettings.model_fields}
        shared.update(
            protected_bootstrap=self.bootstrap("protected"),
            recovery_bootstrap=self.bootstrap("recovery"),
            protected_database_url=SecretStr(self.database_url("protected")),
            recovery_database_url=SecretStr(self.database_url("recovery")),
        )
        return TapstreamSettings.model_validate(shared)

    # --- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] | None = None) -> None:
        """Start what is not running, reuse what is, and return when every part answers."""
        say = progress or (lambda _msg: None)
        self.root.mkdir(parents=True, exist_ok=True)
        say("resolving Kafka jars (Maven Central, cached)")
        cp = resolve(self.root, self.s.maven_repo)
        # The JVMs boot in the background while Postgres starts (pg_ctl waits for it).
        for site in SITES:
            say(f"kafka {site}")
            self.kafka[site].start(cp, self.s.kafka_heap)
        for site in SITES:
            say(f"postgres {site}")
            postgres.start(
                self.root / "pg" / site, self.pg_port(site), self.logs / f"postgres-{site}.log"
            )
        for site in SITES:
            node = self.kafka[site]
            say(f"waiting for kafka {site}")
            readiness.wait_for(
                f"kafka {site} ({node.bootstrap})",
                partial(readiness.kafka_answers, node.bootstrap),
                self.s.ready_timeout_s, node.log,
                running=node.pid,
            )  # fmt: skip
            readiness.wait_for(
                f"postgres {site}",
                partial(readiness.postgres_answers, self.database_url(site)),
                self.s.ready_timeout_s, self.logs / f"postgres-{site}.log",
            )  # fmt: skip
        say("mirrormaker 2")
        self._mirrormaker_up(cp, say)
        env_file = self.root / "local.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))

    def _mirrormaker_up(self, cp: str, say: Callable[[str], None]) -> None:
        """Start MirrorMaker 2, or check that the running one still replicates both ways.

        A running MirrorMaker 2 mirrors a heartbeat every second in each direction. One that no longer
        does (a flow's Connect worker gave up while a cluster was down: its connectors 'failed to
        properly shut down') is restarted; it resumes from its committed offsets."""
        settings, mm = self.client_settings(), self.mirrormaker
        t_start = time.time()
        if not mm.start(settings, cp, self.s.mirrormaker_heap):
            try:
                mm.wait_ready(settings, t_start, STUCK_AFTER_S, say)  # one heartbeat a second
                return
            except readiness.NotReady:
                say("mirrormaker 2 runs but does not replicate: restarting it")
                mm.stop()
                t_start = time.time()
                mm.start(settings, cp, self.s.mirrormaker_heap)
        # A heartbeat older than this start may be left over from an earlier run.
        mm.wait_ready(settings, t_start, self.s.ready_timeout_s, say)

    def down(self) -> list[str]:
        """Stop MirrorMaker 2, both brokers and both Postgres (in that order); data stays."""
        stopped = []
        if self.mirrormaker.stop():
            stopped.append("mirrormaker")
        for site in SITES:
            if self.kafka[site].stop():
                stopped.append(f"kafka-{site}")
        for site in SITES:
            if postgres.stop(self.root / "pg" / site):
                stopped.append(f"postgres-{site}")
        return stopped

    def status(self) -> list[Component]:
        comps = [
            Component(f"kafka-{site}", "kafka", node.port, node.pid(), node.log)
            for site, node in self.kafka.items()
        ]
        mm = self.mirrormaker
        comps.append(Component("mirrormaker", "mirrormaker", None, mm.pid(), mm.log))
        comps += [
            Component(f"postgres-{site}", "postgres", self.pg_port(site),
                      postgres.pid(self.root / "pg" / site), self.logs / f"postgres-{site}.log")
            for site in SITES
        ]  # fmt: skip
        return comps

    def tool(self, site: str, args: list[str]) -> int:
        """Run one of Kafka's own CLI tools with --bootstrap-server set to `site`."""
        if site not in SITES:
            raise SystemExit(f"unknown site {site!r}; choose one of: {', '.join(SITES)}")
        if not args:
            raise SystemExit(f"name a tool: {', '.join(TOOLS)}")
        name = Path(args[0]).name.removesuffix(".sh")
        if name not in TOOLS:
            raise SystemExit(f"unknown tool {args[0]!r}; known: {', '.join(TOOLS)}")
        tool = TOOLS[name]
        cp = resolve(self.root, self.s.maven_repo)
        rest = with_bootstrap(tool, args[1:], self.bootstrap(site))
        log_conf = self.root / "tools-log4j2.properties"
        log_conf.write_text(log4j2_config(str(self.logs / "tools.log")))
        cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", f"-Dlog4j2.configurationFile={log_conf}",
               "-cp", cp, tool.main, *rest]  # fmt: skip
        return subprocess.call(cmd, env=java_env())

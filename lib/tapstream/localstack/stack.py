"""The two-site stack: start (idempotent), stop (no orphans), status, and Kafka's own tools."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import SecretStr

from tapstream.core.settings import TapstreamSettings
from tapstream.localstack import postgres, readiness, registry, toxiproxy
from tapstream.localstack.api_tokens import api_token_env
from tapstream.localstack.classpath import resolve
from tapstream.localstack.control_keys import control_key_env
from tapstream.localstack.jvm import java_env
from tapstream.localstack.kafka_node import KafkaNode, kafka_cluster_id
from tapstream.localstack.layout import overlapping, site_nodes
from tapstream.localstack.mirrormaker import MirrorTuning
from tapstream.localstack.mirrormaker_node import MirrorMakerNode
from tapstream.localstack.properties import log4j2_config
from tapstream.localstack.registry import RegistryNode
from tapstream.localstack.settings import LocalStackSettings
from tapstream.localstack.toxiproxy import ProxySpec, ToxiproxyNode

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
    kind: str  # kafka | mirrormaker | postgres | toxiproxy | registry
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
        self.brokers = {site: self._nodes(site) for site in SITES}
        # The first node of each site (its only one by default): what callers of one broker use.
        self.kafka = {site: nodes[0] for site, nodes in self.brokers.items()}
        self.mirrormaker = MirrorMakerNode(
            self.root / "mirrormaker", self.root / "mirrormaker.pid", self.logs / "mirrormaker.log"
        )
        self.toxiproxy = (
            ToxiproxyNode(self.root / "toxiproxy", self.root / "toxiproxy.pid",
                          self.logs / "toxiproxy.log", settings.toxiproxy_port)
            if settings.link_proxy else None
        )  # fmt: skip
        self.registry = RegistryNode(
            self.root / "registry", self.root / "registry.pid", self.logs / "registry.log",
            settings.registry_port,
        )  # fmt: skip

    def _nodes(self, site: str) -> list[KafkaNode]:
        """The site's KRaft nodes: one by default; the protected site may have several (a quorum
        of all of them), and with a link proxy each gets a listener for MirrorMaker 2."""
        protected = site == "protected"
        count = self.s.protected_brokers if protected else 1
        plan = site_nodes(self.kafka_port(site), count, self.s.link_proxy and protected)
        voters = tuple((n.node_id, n.controller) for n in plan) if count > 1 else ()
        return [
            KafkaNode(
                site, n.client,
                self.root / "kafka" / (site if count == 1 else f"{site}-{n.node_id}"),
                self.logs / (f"kafka-{site}.log" if count == 1 else f"kafka-{site}-{n.node_id}.log"),
                node_id=n.node_id, voters=voters,
                link=(n.link, n.proxy) if n.link is not None and n.proxy is not None else None,
                retention_check_ms=self.s.kafka_retention_check_ms,
            )
            for n in plan
        ]  # fmt: skip

    def link_proxies(self) -> list[ProxySpec]:
        """One toxiproxy per protected broker: its advertised MM2 address -> its MM2 listener."""
        return [
            ProxySpec(node.name, node.link[1], node.link[0])
            for node in self.brokers["protected"]
            if node.link is not None
        ]

    def mirror_tuning(self) -> MirrorTuning:
        """As today on the default stack; with more protected brokers each cluster's internal topics
        take its own default replication factor; with a proxy MM2 goes through it, and a flow whose
        worker lost its group in a cut gets its tasks back at once, not 5 minutes later."""
        proxies = self.link_proxies()
        return MirrorTuning(
            internal_replication_factor=-1 if self.s.protected_brokers > 1 else 1,
            protected_via=",".join(f"127.0.0.1:{p.listen}" for p in proxies) or None,
            rebalance_delay_ms=0 if proxies else None,
        )

    # --- addresses -----------------------------------------------------------------------------
    def kafka_port(self, site: str) -> int:
        return self.s.protected_kafka_port if site == "protected" else self.s.recovery_kafka_port

    def bootstrap(self, site: str) -> str:
        """Every node of the site, so clients find the cluster while any one of them runs."""
        return ",".join(node.bootstrap for node in self.brokers[site])

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
            **api_token_env(self.root),  # the CLI's admin token for the local site managers
            **control_key_env(self.root),  # every process signs and checks tapstream.control
        }

    def registry_env(self) -> dict[str, str]:
        """TAPSTREAM_SCHEMA_REGISTRY_URL of the local registry while it runs (not in local.env: a
        service opts in to the Confluent wire format; every reader decodes both encodings)."""
        if self.registry.pid() is None:
            return {}
        return {"TAPSTREAM_SCHEMA_REGISTRY_URL": self.registry.url}

    def client_settings(self) -> TapstreamSettings:
        """Settings of a tapstream process on this stack (MirrorMaker 2 is generated from them)."""
        shared = {name: getattr(self.s, name) for name in TapstreamSettings.model_fields}
        shared.update(
            protected_bootstrap=self.bootstrap("protected"),
            recovery_bootstrap=self.bootstrap("recovery"),
            protected_database_url=SecretStr(self.database_url("protected")),
            recovery_database_url=SecretStr(self.database_url("recovery")),
        )
        # The stack's control key, even when these settings were loaded before `up` made it (a
        # fresh state dir): unsigned commands from this process would be ignored by the services.
        keys = control_key_env(self.root)
        shared.update(
            control_keys=json.loads(keys["TAPSTREAM_CONTROL_KEYS"]),
            control_key_id=keys["TAPSTREAM_CONTROL_KEY_ID"],
        )
        return TapstreamSettings.model_validate(shared)

    # --- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] | None = None) -> None:
        """Start what is not running, reuse what is, and return when every part answers."""
        say = progress or (lambda _msg: None)
        self.root.mkdir(parents=True, exist_ok=True)
        say("resolving Kafka jars (Maven Central, cached)")
        cp = resolve(self.root, self.s.maven_repo)
        clash = overlapping(
            site_nodes(self.kafka_port("protected"), self.s.protected_brokers, self.s.link_proxy),
            site_nodes(self.kafka_port("recovery"), 1),
        )
        if clash:
            raise RuntimeError(f"the two sites' Kafka ports overlap ({sorted(clash)}): move one")
        # The JVMs boot in the background while Postgres starts (pg_ctl waits for it).
        for site in SITES:
            say(f"kafka {site}")
            nodes = self.brokers[site]
            # The nodes of a quorum share one cluster id, made once for the site.
            cid = self._cluster_id(site) if len(nodes) > 1 else None
            for node in nodes:
                node.start(cp, self.s.kafka_heap, cid)
        if self.toxiproxy is not None:
            say("toxiproxy (the link between the sites)")
            exe = toxiproxy.binary(self.s.toxiproxy_cache, self.s.toxiproxy_version)
            self.toxiproxy.start(exe, self.link_proxies())
        for site in SITES:
            say(f"postgres {site}")
            postgres.start(
                self.root / "pg" / site, self.pg_port(site), self.logs / f"postgres-{site}.log"
            )
        for site in SITES:
            nodes = self.brokers[site]
            say(f"waiting for kafka {site}")
            readiness.wait_for(
                f"kafka {site} ({self.bootstrap(site)}, {len(nodes)} broker(s))",
                partial(readiness.kafka_answers, self.bootstrap(site), len(nodes)),
                self.s.ready_timeout_s, nodes[0].log,
                running=partial(_all_running, nodes),
            )  # fmt: skip
            readiness.wait_for(
                f"postgres {site}",
                partial(readiness.postgres_answers, self.database_url(site)),
                self.s.ready_timeout_s, self.logs / f"postgres-{site}.log",
            )  # fmt: skip
        if self.toxiproxy is not None:
            api = self.toxiproxy.api
            readiness.wait_for("toxiproxy", api.answers, self.s.ready_timeout_s,
                               self.toxiproxy.log, running=self.toxiproxy.pid)  # fmt: skip
            # A reused server may have been left with a cut link or toxics by a test.
            api.populate(self.link_proxies())
            api.reset()
        if self.s.local_registry:
            self._registry_up(say)
        say("mirrormaker 2")
        self._mirrormaker_up(cp, say)
        env_file = self.root / "local.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))

    def _mirrormaker_up(self, cp: str, say: Callable[[str], None]) -> None:
        """Start MirrorMaker 2, or check that the running one still replicates both ways.

        A running MirrorMaker 2 mirrors a heartbeat every second in each direction. One that no longer
        does (a flow's Connect worker gave up while a cluster was down: its connectors 'failed to
        properly shut down') is restarted; it resumes from its committed offsets."""
        settings, mm, tuning = self.client_settings(), self.mirrormaker, self.mirror_tuning()
        t_start = time.time()
        if not mm.start(settings, cp, self.s.mirrormaker_heap, tuning):
            try:
                mm.wait_ready(settings, t_start, STUCK_AFTER_S, say)  # one heartbeat a second
                return
            except readiness.NotReady:
                say("mirrormaker 2 runs but does not replicate: restarting it")
                mm.stop()
                t_start = time.time()
                mm.start(settings, cp, self.s.mirrormaker_heap, tuning)
        # A heartbeat older than this start may be left over from an earlier run.
        mm.wait_ready(settings, t_start, self.s.ready_timeout_s, say)

    def _registry_up(self, say: Callable[[str], None]) -> None:
        """Start the schema registry (built on first use) or reuse the running one."""
        say("schema registry (Apicurio; the first build takes a few minutes)")
        runner = registry.build(self.s.registry_cache, self.s.maven_repo)
        self.registry.start(runner, self.s.registry_heap)
        readiness.wait_for(
            f"schema registry ({self.registry.url})", self.registry.answers,
            self.s.ready_timeout_s, self.registry.log, running=self.registry.pid,
        )  # fmt: skip
        self.registry.require_backward()

    def _cluster_id(self, site: str) -> str:
        path = self.root / "kafka" / f"{site}.cluster.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(kafka_cluster_id())
        return path.read_text().strip()

    def down(self) -> list[str]:
        """Stop the schema registry, MirrorMaker 2, the link proxy, every broker and both Postgres
        (in that order); data stays (the registry's schemas do not: it keeps them in memory)."""
        stopped = []
        if self.registry.stop():
            stopped.append("registry")
        if self.mirrormaker.stop():
            stopped.append("mirrormaker")
        if self.toxiproxy is not None and self.toxiproxy.stop():
            stopped.append("toxiproxy")
        for site in SITES:
            # All nodes of a quorum at once: stopped one by one, the last would wait for a quorum
            # that is gone (its controlled shutdown hangs until the SIGKILL a minute later).
            nodes = self.brokers[site]
            with ThreadPoolExecutor(len(nodes)) as pool:
                done = list(pool.map(KafkaNode.stop, nodes))
            stopped += [f"kafka-{n.name}" for n, was in zip(nodes, done, strict=True) if was]
        for site in SITES:
            if postgres.stop(self.root / "pg" / site):
                stopped.append(f"postgres-{site}")
        return stopped

    def status(self) -> list[Component]:
        comps = [
            Component(f"kafka-{node.name}", "kafka", node.port, node.pid(), node.log)
            for nodes in self.brokers.values()
            for node in nodes
        ]
        mm = self.mirrormaker
        comps.append(Component("mirrormaker", "mirrormaker", None, mm.pid(), mm.log))
        if self.toxiproxy is not None:
            tp = self.toxiproxy
            comps.append(Component("toxiproxy", "toxiproxy", tp.port, tp.pid(), tp.log))
        reg = self.registry
        reg_pid = reg.pid()
        if self.s.local_registry or reg_pid is not None:
            comps.append(Component("registry", "registry", reg.port, reg_pid, reg.log))
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


def _all_running(nodes: list[KafkaNode]) -> bool:
    return all(node.pid() is not None for node in nodes)

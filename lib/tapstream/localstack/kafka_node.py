"""One KRaft node (combined broker+controller) from Apache Kafka's jars: a site's only node, or one
voter of a site's multi-node quorum."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tapstream.localstack import processes
from tapstream.localstack.jvm import java_command, java_env
from tapstream.localstack.properties import (
    broker_properties,
    initial_controllers,
    log4j2_config,
    render,
)


@dataclass(frozen=True)
class KafkaNode:
    site: str
    port: int  # client port; the controller listens on port + 1
    home: Path  # <state>/kafka/<site>[-<id>]: server.properties, data/, cluster.id, directory.id
    log: Path
    node_id: int = 1
    # (node id, controller port) of every voter of the site's quorum, this node included; empty for
    # a site of one node (formatted --standalone).
    voters: tuple[tuple[int, int], ...] = ()
    link: tuple[int, int] | None = None  # (MM2 listener port, proxy port advertised for it)
    retention_check_ms: int | None = None  # log.retention.check.interval.ms (None: Kafka's)
    # A secured node (localstack.secured): its properties rewritten, and format arguments added
    # (SCRAM users that exist from the start).
    secure: Callable[[dict[str, object]], dict[str, object]] | None = None
    format_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.home.name  # "protected", or "protected-2" in a multi-node site

    @property
    def conf(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.home.parent.parent / f"kafka-{self.name}.pid"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.port + 1, *([self.link[0]] if self.link else [])]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        # The config path is in the broker's command line and nowhere else's.
        return processes.read_pid(self.pid_file, marker=str(self.conf))

    def start(self, classpath: str, heap: str, cluster_id: str | None = None) -> None:
        """Format the storage on first use, then start the broker (unless it already runs).
        The nodes of one quorum share `cluster_id`; a lone node keeps its own in cluster.id."""
        if self.pid() is not None:
            return
        taken = [p for p in self.ports if processes.port_in_use(p)]
        if taken:
            raise RuntimeError(
                f"port {', '.join(map(str, taken))} is taken by a process that is not our "
                f"kafka {self.name}: stop it, or choose other ports "
                f"(TAPSTREAM_{self.site.upper()}_KAFKA_PORT)"
            )
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        props = broker_properties(
            self.node_id, self.port, str(data), voters=self.voters, link=self.link,
            retention_check_ms=self.retention_check_ms,
        )  # fmt: skip
        if self.secure is not None:
            props = self.secure(props)
        self.conf.write_text(render(props))
        log_conf = self.home / "log4j2.properties"
        log_conf.write_text(log4j2_config(str(self.log)))
        if not (data / "meta.properties").exists():
            self._format(classpath, log_conf, cluster_id)
        cmd = java_command(heap, log_conf, classpath, "kafka.Kafka", str(self.conf))
        processes.start(cmd, self.pid_file, self.log.with_suffix(".out"), env=java_env())

    def stop(self) -> bool:
        return processes.stop(self.pid_file, marker=str(self.conf), timeout_s=60)

    def directory_id(self) -> str:
        """This node's metadata directory id, chosen once (the quorum's voter set names it)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return _once(self.home / "directory.id")

    def _format(self, classpath: str, log_conf: Path, cluster_id: str | None) -> None:
        cid = cluster_id or _once(self.home / "cluster.id")
        if self.voters:
            # Every voter is formatted with the same initial voter set (KIP-853): a 3-node quorum
            # from the start, no node promoted later.
            dirs = {n: self.directory_id() if n == self.node_id else _once(self._sibling(n))
                    for n, _ in self.voters}  # fmt: skip
            quorum = ["--initial-controllers",
                      initial_controllers([(n, port, dirs[n]) for n, port in self.voters])]  # fmt: skip
        else:
            quorum = ["--standalone"]
        fmt = subprocess.run(
            ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log_conf}", "-cp", classpath,
             "kafka.tools.StorageTool", "format", "-t", cid,
             "-c", str(self.conf), *quorum, *self.format_args, "--ignore-formatted"],
            capture_output=True, text=True, env=java_env(),
        )  # fmt: skip
        if fmt.returncode != 0:
            raise RuntimeError(
                f"formatting kafka {self.site} storage in {self.home} failed:\n{fmt.stdout}{fmt.stderr}"
            )

    def _sibling(self, node_id: int) -> Path:
        """directory.id of another node of this site (its home is <site>-<id>, beside ours)."""
        home = self.home.parent / f"{self.site}-{node_id}"
        home.mkdir(parents=True, exist_ok=True)
        return home / "directory.id"


def _once(path: Path) -> str:
    """A Kafka uuid stored in `path`, made on first use."""
    if not path.exists():
        path.write_text(kafka_cluster_id())
    return path.read_text().strip()


def kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like `random-uuid`).
    Like Kafka's Uuid.randomUuid, never one starting with '-': the format tool would read it as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid

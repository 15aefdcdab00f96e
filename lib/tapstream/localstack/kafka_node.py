"""One site's Kafka: a single combined broker+controller KRaft node from Apache Kafka's jars."""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tapstream.localstack import processes
from tapstream.localstack.jvm import java_command, java_env
from tapstream.localstack.properties import broker_properties, log4j2_config, render


@dataclass(frozen=True)
class KafkaNode:
    site: str
    port: int  # client port; the controller listens on port + 1
    home: Path  # <state>/kafka/<site>: server.properties, data/, cluster.id
    log: Path

    @property
    def conf(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.home.parent.parent / f"kafka-{self.site}.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        # The config path is in the broker's command line and nowhere else's.
        return processes.read_pid(self.pid_file, marker=str(self.conf))

    def start(self, classpath: str, heap: str) -> None:
        """Format the storage on first use, then start the broker (unless it already runs)."""
        if self.pid() is not None:
            return
        if processes.port_in_use(self.port) or processes.port_in_use(self.port + 1):
            raise RuntimeError(
                f"port {self.port} or {self.port + 1} is taken by a process that is not our "
                f"kafka {self.site}: stop it, or choose other ports "
                f"(TAPSTREAM_{self.site.upper()}_KAFKA_PORT)"
            )
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render(broker_properties(1, self.port, str(data))))
        log_conf = self.home / "log4j2.properties"
        log_conf.write_text(log4j2_config(str(self.log)))
        if not (data / "meta.properties").exists():
            self._format(classpath, log_conf)
        cmd = java_command(heap, log_conf, classpath, "kafka.Kafka", str(self.conf))
        processes.start(cmd, self.pid_file, self.log.with_suffix(".out"), env=java_env())

    def stop(self) -> bool:
        return processes.stop(self.pid_file, marker=str(self.conf), timeout_s=60)

    def _format(self, classpath: str, log_conf: Path) -> None:
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(kafka_cluster_id())
        fmt = subprocess.run(
            ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log_conf}", "-cp", classpath,
             "kafka.tools.StorageTool", "format", "-t", cluster_id_file.read_text().strip(),
             "-c", str(self.conf), "--standalone", "--ignore-formatted"],
            capture_output=True, text=True, env=java_env(),
        )  # fmt: skip
        if fmt.returncode != 0:
            raise RuntimeError(
                f"formatting kafka {self.site} storage in {self.home} failed:\n{fmt.stdout}{fmt.stderr}"
            )


def kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like `random-uuid`).
    Like Kafka's Uuid.randomUuid, never one starting with '-': the format tool would read it as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid

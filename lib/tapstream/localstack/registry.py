"""Apicurio Registry for the local stack (`make up REGISTRY=1`): a real schema registry whose
Confluent-compatible API (`/apis/ccompat/v7`) tapstream's codec and kcat talk to.

Built once with Maven from deploy/registry/ (Apicurio's released application jar, augmented by
Quarkus) into a per-content cache, like the Kafka jars; storage is Apicurio's default, H2 in
memory, so a restarted registry starts empty and services register their schemas again (ids
change: records written before a restart name ids the new registry does not know). Every subject
is checked for BACKWARD compatibility: a global rule set at start, also what `GET /config` shows.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tapstream.localstack import processes
from tapstream.localstack.jvm import java_env

SOURCE = Path(__file__).resolve().parents[3] / "deploy" / "registry"
RUNNER = Path("target") / "tapstream-local-registry-1-runner.jar"
COMPAT_PATH = "/apis/ccompat/v7"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Build-time settings of the augmentation (see deploy/registry/pom.xml): the named datasources of
# the JDBC drivers left out are declared H2; Apicurio only ever activates the one it is told to.
BUILD_PROPERTIES = (
    "-Dquarkus.datasource.mysql.db-kind=h2",
    "-Dquarkus.datasource.mssql.db-kind=h2",
)


class RegistryError(RuntimeError):
    """Maven or Java is missing, the build failed, or the registry refused a request."""


def source_digest(source: Path = SOURCE) -> str:
    """Hash of every file of the registry's build (paths and contents)."""
    h = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def build(cache: Path, maven_repo: Path, source: Path = SOURCE) -> Path:
    """The registry's runner jar, built on first use (a few minutes: Maven fetches ~150 MB)."""
    out = cache / source_digest(source)[:16]
    runner = out / RUNNER
    if runner.is_file() and (runner.parent / "lib").is_dir():
        return runner
    for tool, pkg in (("mvn", "maven"), ("java", "openjdk-17-jre-headless")):
        if shutil.which(tool) is None:
            raise RegistryError(
                f"`{tool}` is not on the PATH: install it (Debian: apt-get install {pkg}) and retry."
            )
    shutil.rmtree(out, ignore_errors=True)  # a build that stopped half-way
    shutil.copytree(source, out)
    mvn = ["mvn", "-B", "-q", "-s", str(out / "settings.xml"), f"-Dmaven.repo.local={maven_repo}"]
    # Apicurio's modules missing from Maven Central, from their sources, into the local repository.
    _mvn(
        [*mvn, "-f", str(out / "apicurio-3.0.9" / "pom.xml"), "install", "-Dmaven.test.skip",
         "-Dcheckstyle.skip", "-Dmaven.javadoc.skip", "-Dmaven.source.skip",
         "-DskipCommitIdPlugin=true"],
        "Apicurio's 3.0.9 modules",
    )  # fmt: skip
    _mvn([*mvn, "-f", str(out / "pom.xml"), "package", "-Dmaven.test.skip", *BUILD_PROPERTIES],
         "the registry")  # fmt: skip
    if not runner.is_file():
        raise RegistryError(f"the registry build left no {runner}")
    return runner


def _mvn(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=java_env())
    if res.returncode != 0:
        raise RegistryError(
            f"mvn could not build {what} from Maven Central:\n{(res.stdout + res.stderr)[-3000:]}"
        )


@dataclass(frozen=True)
class RegistryNode:
    home: Path  # <state>/registry: marks the process as this stack's
    pid_file: Path
    log: Path
    port: int

    @property
    def url(self) -> str:
        """What TAPSTREAM_SCHEMA_REGISTRY_URL and `kcat -r` take."""
        return f"http://127.0.0.1:{self.port}{COMPAT_PATH}"

    @property
    def marker(self) -> str:
        return f"-Dtapstream.registry.home={self.home}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, marker=self.marker)

    def start(self, runner: Path, heap: str) -> bool:
        """Start the registry unless it runs; True if it was started."""
        if self.pid() is not None:
            return False
        if processes.port_in_use(self.port):
            raise RuntimeError(
                f"port {self.port} is taken by a process that is not our schema registry: stop it, "
                "or choose another port (TAPSTREAM_REGISTRY_PORT)"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [
            "java", f"-Xmx{heap}", "-Xms64m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            self.marker,
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}",
            # Apicurio's default global rule: what a Confluent registry does out of the box.
            "-Dapicurio.rules.global.compatibility=BACKWARD",
            "-Dquarkus.log.level=INFO", "-Dquarkus.http.access-log.enabled=false",
            "-jar", str(runner),
        ]  # fmt: skip
        processes.start(cmd, self.pid_file, self.log, env=java_env())
        return True

    def stop(self) -> bool:
        return processes.stop(self.pid_file, marker=self.marker, timeout_s=20)

    def answers(self) -> bool:
        """The Confluent API answers (the storage is initialised before the HTTP port opens)."""
        return httpx.get(self.url + "/config", timeout=2).status_code == 200

    def require_backward(self) -> None:
        """Store BACKWARD as the global compatibility level, so `GET /config` shows the rule the
        registry applies (Apicurio reports NONE for a default rule set only by configuration)."""
        res = httpx.put(
            self.url + "/config",
            json={"compatibility": "BACKWARD"},
            headers={"Content-Type": CONTENT_TYPE},
            timeout=10,
        )
        if res.status_code != 200:
            raise RegistryError(f"PUT {self.url}/config: {res.status_code} {res.text[:300]}")

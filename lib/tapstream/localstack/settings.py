"""Settings of the local stack (TAPSTREAM_* like every other part of tapstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tapstream.core.settings import TapstreamSettings


class LocalStackSettings(TapstreamSettings):
    state_dir: Path = Field(Path(".tapstream"), description="Data, logs, pid files and local.env.")
    maven_repo: Path = Field(
        Path.home() / ".cache" / "tapstream" / "m2",
        description="Maven repository the Kafka jars are fetched into (kept across `make clean`).",
    )
    protected_kafka_port: int = Field(19092, description="Client port of the protected cluster.")
    recovery_kafka_port: int = Field(19192, description="Client port of the recovery cluster.")
    protected_pg_port: int = Field(15432, description="PostgreSQL port of the protected site.")
    recovery_pg_port: int = Field(15433, description="PostgreSQL port of the recovery site.")
    protected_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description="KRaft nodes (combined broker+controller, all voters) of the protected site. "
        "With 3 or more: replication factor 3, min.insync.replicas 2, unclean election off. Node i "
        "listens on the protected Kafka port + 10*i (its controller on + 1).",
    )
    link_proxy: bool = Field(
        False,
        description="Put a toxiproxy between MirrorMaker 2 and the protected cluster (one proxy per "
        "broker, on its port + 3) so tests can cut the link or add latency and bandwidth caps.",
    )
    toxiproxy_port: int = Field(18474, description="Toxiproxy's HTTP API port (with link_proxy).")
    toxiproxy_version: str = Field(
        "v2.12.0", description="Toxiproxy release built from the Go module proxy (with link_proxy)."
    )
    toxiproxy_cache: Path = Field(
        Path.home() / ".cache" / "tapstream" / "toxiproxy",
        description="Where the built toxiproxy server is kept, one directory per version.",
    )
    local_registry: bool = Field(
        False,
        description="Also run a schema registry (Apicurio Registry, its Confluent-compatible API) "
        "for both sites (`make up REGISTRY=1`); services use it when TAPSTREAM_SCHEMA_REGISTRY_URL "
        "names it (`python -m tapstream.localstack env` prints it).",
    )
    registry_port: int = Field(18081, description="HTTP port of the local schema registry.")
    registry_heap: str = Field("256m", description="-Xmx of the schema registry's JVM.")
    registry_cache: Path = Field(
        Path.home() / ".cache" / "tapstream" / "registry",
        description="Where the schema registry is built, one directory per content of its build.",
    )
    kcat_cache: Path = Field(
        Path.home() / ".cache" / "tapstream" / "kcat",
        description="Where kcat with Avro support (kcat -s value=avro -r URL) is built.",
    )
    secured_kafka_ports: tuple[int, int] = Field(
        (29092, 29192),
        description="`up --secure` (make up SECURE=1): client ports of the secured protected and "
        "recovery brokers (each controller on the port + 1).",
    )
    secured_pg_ports: tuple[int, int] = Field(
        (25432, 25433), description="`up --secure`: PostgreSQL ports of the secured sites."
    )
    kafka_heap: str = Field("512m", description="-Xmx of each broker JVM.")
    kafka_retention_check_ms: int | None = Field(
        None,
        gt=0,
        description="log.retention.check.interval.ms of every broker (None: Kafka's 5 minutes). "
        "The chaos stack checks every second, so a test can watch a short retention pass.",
    )
    mirrormaker_heap: str = Field("384m", description="-Xmx of the MirrorMaker 2 JVM.")
    ready_timeout_s: float = Field(180.0, description="How long `up` waits for each component.")
    test_stack: Literal["auto", "local", "containers"] = Field(
        "auto",
        description="What integration tests run on: 'local' reuses or starts this stack; "
        "'containers' uses testcontainers (needs a Docker engine); 'auto' takes a running local "
        "stack, else containers where a Docker engine answers, else starts the local stack.",
    )

    @property
    def root(self) -> Path:
        return self.state_dir.resolve()

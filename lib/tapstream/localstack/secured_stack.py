"""Both sites secured: two SASL_SSL + SCRAM-SHA-512 Kafka nodes with the StandardAuthorizer and the
ACL table's users and grants (localstack.secured), MirrorMaker 2 logged in as its own principal on
both, and a Postgres per site. Every tapstream process gets the environment of ONE principal
(`env(service)`): the broker, not the code, decides what it may read and write.

One CA and one password file serve both clusters (a principal that crosses the sites has the same
password on both, as in core/acl.py). Everything lives under its own home; nothing of the default
stack changes. `python -m tapstream.localstack up --secure` (`make up SECURE=1`: home `<state dir>/secured`, the
ports of LocalStackSettings.secured_*) and the secured integration tests (their own home and free
ports) start it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tapstream.core.acl import CLUSTERS
from tapstream.core.durable import atomic_write
from tapstream.core.settings import Site, TapstreamSettings
from tapstream.localstack import postgres, readiness
from tapstream.localstack.control_keys import control_key_env
from tapstream.localstack.mirrormaker import MirrorTuning
from tapstream.localstack.mirrormaker_node import MirrorMakerNode
from tapstream.localstack.secured import ADMIN, SecuredKafka

MIRRORMAKER = "mirrormaker2"  # the ACL table's name of MirrorMaker 2's principal


class SecuredSites:
    """`ports[site]`: the Kafka client port (its controller listens on the next one);
    `pg_ports[site]`: that site's Postgres."""

    def __init__(
        self,
        home: Path,
        ports: dict[Site, int],
        pg_ports: dict[Site, int],
        kafka_heap: str = "384m",
        mirrormaker_heap: str = "320m",
    ) -> None:
        self.home = home.resolve()
        self.kafka = {
            site: SecuredKafka(self.home / site, ports[site], site, kafka_heap, shared=self.home)
            for site in CLUSTERS
        }
        self.pg_ports = pg_ports
        self.mirrormaker_heap = mirrormaker_heap
        self.logs = self.home / "logs"
        self.mirrormaker = MirrorMakerNode(
            self.home / "mirrormaker", self.home / "mirrormaker.pid", self.logs / "mirrormaker.log"
        )
        first = self.kafka["protected"]
        self.ca_file, self.passwords, self.principals = (
            first.ca_file,
            first.passwords,
            first.principals,
        )

    # --- who is who -----------------------------------------------------------------------------
    def user(self, service: str) -> str:
        """The Kafka user of a table principal (`tapper`, `vdsa-recovery`, ...) or the admin."""
        return ADMIN if service == ADMIN else self.principals[service].user

    def database_url(self, site: Site) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_ports[site]}/postgres"

    def variables(self, service: str) -> dict[str, str]:
        """TAPSTREAM_* of a process logged in as `service`'s principal on both clusters."""
        user = self.user(service)
        return {
            "TAPSTREAM_ENV_FILE": "",  # nothing from the default stack's local.env
            "TAPSTREAM_PROTECTED_BOOTSTRAP": self.kafka["protected"].bootstrap,
            "TAPSTREAM_RECOVERY_BOOTSTRAP": self.kafka["recovery"].bootstrap,
            "TAPSTREAM_PROTECTED_DATABASE_URL": self.database_url("protected"),
            "TAPSTREAM_RECOVERY_DATABASE_URL": self.database_url("recovery"),
            "TAPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TAPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TAPSTREAM_KAFKA_SASL_USERNAME": user,
            "TAPSTREAM_KAFKA_SASL_PASSWORD": self.passwords[user],
            "TAPSTREAM_KAFKA_SSL_CAFILE": str(self.ca_file),
            "TAPSTREAM_STATE_DIR": str(self.home),
            **control_key_env(self.home),
        }

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """A child process's whole environment: ours, minus every other TAPSTREAM_* setting (a
        developer's exported ports or tokens must not leak into a secured service), plus
        `variables(service)` and `extra`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TAPSTREAM_")}
        return base | self.variables(service) | extra

    def settings(self, service: str, **overrides: Any) -> TapstreamSettings:
        """In-process settings of `service`'s principal (tests, the CLI's functions)."""
        values: dict[str, Any] = {
            k.removeprefix("TAPSTREAM_").lower(): v
            for k, v in self.variables(service).items()
            if k not in ("TAPSTREAM_ENV_FILE", "TAPSTREAM_STATE_DIR")
        }
        values["control_keys"] = {
            k: SecretStr(v) for k, v in json.loads(values.pop("control_keys")).items()
        }
        return TapstreamSettings(_env_file=None, **(values | overrides))

    def write_env_files(self) -> Path:
        """<home>/env/<service>.env (mode 0600) for every principal: run any process as it with
        `TAPSTREAM_ENV_FILE=<that file>`. Returns the folder."""
        folder = self.home / "env"
        folder.mkdir(parents=True, exist_ok=True)
        for service in self.principals:
            body = "".join(
                f"{k}={v}\n"
                for k, v in self.variables(service).items()
                if k != "TAPSTREAM_ENV_FILE"
            )
            atomic_write(folder / f"{service}.env", body, mode=0o600)
        return folder

    # --- lifecycle ------------------------------------------------------------------------------
    def up(
        self, classpath: str, timeout_s: float = 180, say: Callable[[str], None] | None = None
    ) -> None:
        """Start what is not running (both JVMs boot while Postgres starts), create the users and
        ACLs, then MirrorMaker 2; return when each direction mirrors a fresh heartbeat."""
        tell = say or (lambda _m: None)
        self.logs.mkdir(parents=True, exist_ok=True)
        for site, node in self.kafka.items():
            tell(f"secured kafka {site}")
            node.launch(classpath)
        for site in CLUSTERS:
            tell(f"postgres {site}")
            postgres.start(
                self.home / "pg" / site, self.pg_ports[site], self.logs / f"postgres-{site}.log"
            )
        for site, node in self.kafka.items():
            tell(f"users and ACLs on kafka {site}")
            node.configure(timeout_s)
            readiness.wait_for(
                f"postgres {site}",
                partial(readiness.postgres_answers, self.database_url(site)),
                timeout_s,
                self.logs / f"postgres-{site}.log",
            )
        tell("mirrormaker 2 (its own principal on both clusters)")
        mm_settings = self.settings(MIRRORMAKER)
        since = time.time()
        if not self.mirrormaker.start(
            mm_settings, classpath, self.mirrormaker_heap, MirrorTuning()
        ):
            since = 0.0  # already running with this configuration: any heartbeat will do
        self.mirrormaker.wait_ready(mm_settings, since, timeout_s, tell, secured=True)
        self.write_env_files()

    def status(self) -> list[tuple[str, int | None, int | None]]:
        """(component, pid or None, port)."""
        rows: list[tuple[str, int | None, int | None]] = [
            (f"kafka-{site}", node.node.pid(), node.port) for site, node in self.kafka.items()
        ]
        rows.append(("mirrormaker", self.mirrormaker.pid(), None))
        rows += [
            (f"postgres-{site}", postgres.pid(self.home / "pg" / site), self.pg_ports[site])
            for site in CLUSTERS
        ]
        return rows

    def down(self) -> list[str]:
        stopped = ["mirrormaker"] if self.mirrormaker.stop() else []
        stopped += [f"kafka-{site}" for site, node in self.kafka.items() if node.node.stop()]
        stopped += [
            f"postgres-{site}" for site in CLUSTERS if postgres.stop(self.home / "pg" / site)
        ]
        return stopped

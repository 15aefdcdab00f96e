"""The site manager service: event store, projection, REST API and this site's recovery operations."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn

from tapstream.core.logging import get_logger
from tapstream.site_manager import metrics, paths
from tapstream.site_manager.api import make_api
from tapstream.site_manager.application import Application
from tapstream.site_manager.auth import TokenStore
from tapstream.site_manager.console import Telemetry, mount_console
from tapstream.site_manager.domain import Aggregate, Ledger, Outcome, Recorded
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.event_log import EventLog, Read
from tapstream.site_manager.operations import Operations
from tapstream.site_manager.projection import Projection
from tapstream.site_manager.settings import SiteManagerSettings

log = get_logger("tapstream.site_manager")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM and stops us cleanly."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def tls_options(s: SiteManagerSettings) -> dict[str, Any]:
    """uvicorn's HTTPS options: none without a certificate; with a client CA, mTLS (a client
    certificate signed by it is required before any request, then the bearer token as always)."""
    if not s.site_manager_tls_certfile:
        if s.site_manager_tls_client_ca:
            raise ValueError(
                "TAPSTREAM_SITE_MANAGER_TLS_CLIENT_CA needs TAPSTREAM_SITE_MANAGER_TLS_CERTFILE "
                "(mTLS is on top of HTTPS)"
            )
        return {}
    tls: dict[str, Any] = {
        "ssl_certfile": str(s.site_manager_tls_certfile),
        "ssl_keyfile": str(s.site_manager_tls_keyfile) if s.site_manager_tls_keyfile else None,
    }
    if s.site_manager_tls_client_ca:
        tls |= {
            "ssl_ca_certs": str(s.site_manager_tls_client_ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    return tls


class SiteManager:
    def __init__(self, settings: SiteManagerSettings) -> None:
        self.s = settings
        self.site = settings.site
        self.ledger = Ledger()
        self.projection = Projection(settings.database_url)
        self.events = EventLog(settings)
        self.app = Application(self.site, self.ledger, self.events.append, applied=self._save)
        self.operations: Operations | None = None  # set in start(), once the ledger is loaded
        self.telemetry = Telemetry(settings) if settings.site_manager_console else None
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.ready = False  # every part started (the API answers a little before)

    @property
    def api_url(self) -> str:
        scheme = "https" if self.s.site_manager_tls_certfile else "http"
        return f"{scheme}://{self.s.site_manager_host}:{self.port}"

    async def start(self) -> None:
        await self.projection.start(rebuild=self.s.site_manager_rebuild)
        if self.s.site_manager_rebuild:
            log.warning(
                "projection dropped; rebuilding from the topics",
                topics=[self.events.local, self.events.remote],
            )
        await self.projection.load(self.ledger)
        await self.events.start()
        self.events.follow(await self.projection.offsets(), self._on_reads)
        await self.events.wait_caught_up()
        operations = self.operations = Operations(self.s, self.ledger, self.execute)
        tokens = TokenStore(self.s.tokens_file)
        if not tokens.tokens():
            log.warning(
                "no API token issued yet: every request but /health is refused until one is; "
                "on this host run `python -m tapstream.site_manager token issue NAME --role admin`",
                tokens_file=str(tokens.path),
            )
        api = make_api(self, operations, tokens)
        if self.telemetry is not None:
            self.telemetry.start()
            mount_console(api, self, operations, tokens, self.telemetry)
        config = uvicorn.Config(
            api,
            host=self.s.site_manager_host,
            port=self.s.api_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            **tls_options(self.s),
        )
        self._server = _Server(config)
        self._server_task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._server_task.done():
                await self._server_task
                raise RuntimeError(
                    f"the REST API could not listen on {self.s.site_manager_host}:{self.s.api_port}"
                )
            await asyncio.sleep(0.05)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        await self.execute(
            "site", self.site, c.RegisterSite(self.site, self.api_url, self.s.bootstrap)
        )
        await operations.start()
        self.ready = True
        log.info("site manager ready", api=self.api_url, aggregates=len(self.ledger.entries))

    async def wait(self) -> None:
        await self.events.wait()

    async def stop(self) -> None:
        if self.operations is not None:
            await self.operations.stop()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server_task, 10)
        if self.telemetry is not None:
            await self.telemetry.stop()
        await self.events.stop()
        await self.projection.stop()

    # --- commands --------------------------------------------------------------------------------
    async def execute(
        self,
        aggregate_type: str,
        aggregate_id: str,
        command: c.Command,
        expected_version: int | None = None,
    ) -> Aggregate:
        if isinstance(command, c.AddVolume):
            # Refused here already (422); each site checks again with its own roots before it acts.
            paths.volume_path(command.path, self.s.volume_roots)
            if command.target_path:
                paths.target_path(command.target_path, self.s.target_roots)
        with metrics.COMMAND_SECONDS.labels(type(command).__name__).time():
            agg = await self.app.execute(aggregate_type, aggregate_id, command, expected_version)
        if self.operations is not None:
            self.operations.changed(aggregate_type, aggregate_id)
        return agg

    async def _save(self, applied: list[Recorded]) -> None:
        superseded = self._drain_superseded()
        await self.projection.save(self.ledger, applied, superseded, superseded=superseded)
        for r in applied:
            metrics.EVENTS.labels(r.aggregate_type, r.type, "local").inc()

    def _drain_superseded(self) -> list[Recorded]:
        """Applied events the other site's earlier decision on the same version rolled back."""
        superseded, self.ledger.superseded = self.ledger.superseded, []
        for r in superseded:
            metrics.CONFLICTS.inc()
            log.error(
                "a decision was rolled back: the other site decided the same version of this "
                "aggregate first; see GET /conflicts and retry if it still applies",
                aggregate=f"{r.aggregate_type}/{r.aggregate_id}",
                version=r.version,
                site=r.site,
                type=r.type,
            )
        return superseded

    async def _on_reads(self, reads: list[Read]) -> None:
        async with self.app.apply_lock:  # see Application.apply_lock
            applied: list[Recorded] = []
            conflicts: list[Recorded] = []
            waiting: list[Recorded] = []
            offsets: dict[tuple[str, int], int] = {}
            for r in reads:
                offsets[(r.topic, r.partition)] = r.offset + 1
                if r.record is None:
                    continue
                outcome = self.ledger.check(r.record)
                if outcome in (Outcome.APPLIED, Outcome.SUPERSEDES):
                    applied += self.ledger.accept(r.record)
                elif outcome is Outcome.WAITING:
                    waiting.append(r.record)
                elif outcome is Outcome.CONFLICT:
                    conflicts.append(r.record)
                    metrics.CONFLICTS.inc()
                    log.error(
                        "conflicting event kept aside (two sites changed one aggregate concurrently)",
                        aggregate=f"{r.record.aggregate_type}/{r.record.aggregate_id}",
                        version=r.record.version,
                        site=r.record.site,
                        type=r.record.type,
                    )
            superseded = self._drain_superseded()
            applied = [r for r in applied if r not in superseded]
            await self.projection.save(
                self.ledger, applied, conflicts + superseded, offsets, waiting, superseded
            )
        for rec in applied:
            metrics.EVENTS.labels(rec.aggregate_type, rec.type, "topic").inc()
        if self.operations is not None:
            for key in {(rec.aggregate_type, rec.aggregate_id) for rec in applied}:
                self.operations.changed(*key)

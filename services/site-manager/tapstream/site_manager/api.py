"""The REST API (FastAPI; OpenAPI at /docs and /openapi.json). Every change is a command on an
aggregate; `If-Match: <version>` makes it conditional (optimistic concurrency: 409 when stale).
Errors are JSON `{"detail": ...}` whose text says what to do next."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import make_asgi_app
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from tapstream.core.logging import get_logger
from tapstream.site_manager import auth, metrics
from tapstream.site_manager.application import ACTOR, Execute
from tapstream.site_manager.auth import TokenError, TokenStore
from tapstream.site_manager.domain import (
    CheckpointLog,
    ConcurrencyError,
    DomainError,
    Invalid,
    Ledger,
    NotFound,
)
from tapstream.site_manager.domain import commands as c

log = get_logger("tapstream.site_manager.api")


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # tapstream.core.names; '..' checked apart
TEXT_PATTERN = r"^[^\x00]*$"  # Postgres text and jsonb hold no NUL (nor lone surrogates: 422)
MAX_SECONDS = 366 * 86400.0  # a year: beyond it a setting is a typo, not a plan
MAX_SIZE = 2**63 - 1  # Avro long


def _no_dotdot(name: str) -> str:
    if ".." in name:
        raise ValueError("a name may not contain '..'")
    return name


# Group, VM and volume names are the domain's to judge (core.names, a 422 naming the field); here
# only what must never reach Postgres. Token names are this module's own.
DomainName = Annotated[str, Field(max_length=4096, pattern=TEXT_PATTERN)]
TokenName = Annotated[str, Field(pattern=NAME_PATTERN), AfterValidator(_no_dotdot)]
Text = Annotated[str, Field(max_length=1024, pattern=TEXT_PATTERN)]
PathText = Annotated[str, Field(max_length=4096, pattern=TEXT_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
NamePath = Annotated[str, PathParam(max_length=4096, pattern=TEXT_PATTERN)]
IfMatch = Annotated[
    int | None,
    Header(alias="If-Match", description="Expected aggregate version", ge=0, le=MAX_SIZE),
]


class Body(BaseModel):
    """Every request body: unknown fields, NaN and infinities are refused (422), never stored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GroupIn(Body):
    name: DomainName
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="sync: the VM's write is acked after Kafka; async: after the local write",
    )
    rpo_target_s: Seconds = 30.0
    journal_history_s: Seconds = 3600.0
    checkpoint_interval_s: Seconds = 5.0


class GroupSettingsIn(Body):
    mode: Literal["sync", "async"] | None = None
    rpo_target_s: Seconds | None = None
    journal_history_s: Seconds | None = None
    checkpoint_interval_s: Seconds | None = None


class VmIn(Body):
    vm: DomainName
    target_vm: DomainName = ""


class TargetIn(Body):
    target_vm: DomainName


class VmSpecIn(Body):
    """How the VM comes up at the recovery site (failover, move, failover test): a libvirt domain
    the site manager builds, or what its exec driver is handed."""

    vcpus: int = Field(1, ge=1, le=256)
    memory_mib: int = Field(512, ge=16, le=4 * 1024 * 1024)
    disks: list[DomainName] = Field(
        default_factory=list,
        max_length=26,
        description="The VM's volumes in disk order (vda, vdb, ...); empty: all, by name",
    )
    network: DomainName = Field("", description="libvirt network of the recovered VM; '': none")
    boot_order: int = Field(0, ge=-1000, le=1000, description="Lower boots first in the group")
    kernel: PathText = Field("", description="Direct kernel boot: path at the recovery site")
    initrd: PathText = ""
    cmdline: PathText = ""


class VolumeIn(Body):
    volume: DomainName
    path: PathText = Field(description="Disk image at the protected site")
    size: int = Field(0, ge=0, le=MAX_SIZE)
    target_path: PathText = Field(
        "", description="Where the recovery site puts the promoted volume (default: its state dir)"
    )


class PauseIn(Body):
    reason: Text = ""


class CheckpointIn(Body):
    tag: Text | None = None


class RecoveryIn(Body):
    checkpoint: Text = Field(default="latest", description="Checkpoint id, tag or latest")


class TokenIn(Body):
    name: TokenName
    role: Literal["viewer", "operator", "admin"] = Field(
        description="viewer: reads; operator: also checkpoints, pause/resume, failover test, "
        "failover, move, reverse, failback; admin: also groups, VMs, volumes, pairing, tokens"
    )


class Authenticate:
    """ASGI middleware: the route's least role (auth.required_role) against the bearer token's.
    Runs before the body is read, so an unauthenticated caller learns nothing about validation.
    The caller's token name becomes the actor of the domain events its request decides."""

    def __init__(self, app: ASGIApp, store: TokenStore, site: str) -> None:
        self.app, self.store, self.site = app, store, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if scope["type"] == "http" else None
        if route is None:  # not an API route: /metrics, /docs, /openapi.json, a 404 or 405
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # for the request counter, also when we answer 401/403
        need = auth.required_role(scope["method"], route.path)
        if need is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header = headers.get(b"authorization", b"").decode("latin-1")
        token = auth.bearer(header)
        try:
            self.store.tokens()  # read (or re-read) first: an unreadable store refuses everyone
            who = self.store.authenticate(token) if token else None
        except TokenError as exc:
            log.error("API token store unreadable: every request is refused", error=str(exc))
            await self._refuse(scope, receive, send, 503, str(exc))
            return
        if who is None:
            await self._refuse(scope, receive, send, 401, self._why_401(token))
            return
        if who.role < need:
            detail = (
                f"token {who.name!r} has the role {who.role}; {scope['method']} {route.path} needs "
                f"{need}: ask an admin of the {self.site} site for a token with that role "
                f"(`tapstream token issue NAME --role {need} --site {self.site}`)"
            )
            await self._refuse(scope, receive, send, 403, detail)
            return
        reset = ACTOR.set(who.name)
        try:
            await self.app(scope, receive, send)
        finally:
            ACTOR.reset(reset)

    def _why_401(self, token: str | None) -> str:
        if not self.store.tokens():
            return (
                f"no API token was issued at the {self.site} site yet: on its host run "
                "`python -m tapstream.site_manager token issue NAME --role admin`, then send "
                "`Authorization: Bearer <token>` (the CLI reads TAPSTREAM_API_TOKEN)"
            )
        if token is None:
            return (
                "this API needs a token: send `Authorization: Bearer <token>` (the CLI reads "
                "TAPSTREAM_API_TOKEN or ~/.config/tapstream/token); an admin issues one with "
                "`tapstream token issue NAME --role viewer|operator|admin`"
            )
        return (
            f"this token is not valid at the {self.site} site (revoked, mistyped, or issued by the "
            "other site's manager): check TAPSTREAM_API_TOKEN or ask an admin for a new one"
        )

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="tapstream"'} if status == 401 else None
        await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
            scope, receive, send
        )


class Projected(Protocol):
    """The projection's reads (Postgres in the service)."""

    async def state(self, aggregate_type: str, aggregate_id: str) -> dict[str, Any] | None: ...
    async def states(self, aggregate_type: str) -> list[dict[str, Any]]: ...
    async def events(self, aggregate_type: str, aggregate_id: str) -> list[dict[str, Any]]: ...
    async def conflicts(self) -> list[dict[str, Any]]: ...


class Following(Protocol):
    @property
    def caught_up(self) -> asyncio.Event: ...


class Site(Protocol):
    """The site manager as the API sees it: its state, and commands through `execute`."""

    @property
    def site(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def events(self) -> Following: ...
    @property
    def projection(self) -> Projected: ...
    @property
    def execute(self) -> Execute: ...


class Recovery(Protocol):
    """What the API asks of this site's operations (`site_manager.operations.Operations`)."""

    async def control(self, group: str, kind: str) -> None: ...
    async def checkpoint(self, group: str, tag: str | None) -> str: ...
    async def checkpoints(self, group: str) -> list[dict[str, Any]]: ...
    async def status(self, state: dict[str, Any]) -> dict[str, Any]: ...
    async def begin(self, kind: str, state: dict[str, Any], checkpoint: str) -> dict[str, Any]: ...
    async def stop_test(self, state: dict[str, Any]) -> dict[str, Any]: ...


def _route(scope: Scope) -> APIRoute | None:
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", []):
        if isinstance(route, APIRoute) and route.matches(scope)[0] is Match.FULL:
            return route
    return None


async def live_group(sm: Site, name: str) -> dict[str, Any]:
    """A group's state; 404 if it does not exist or was deleted (the API's and the console's)."""
    state = await sm.projection.state("group", name)
    if state is None or state["status"] == "deleted":
        raise HTTPException(
            404, f"no protection group {name!r}; list them with `tapstream group list`"
        )
    return state


async def group_trail(sm: Site, name: str) -> list[dict[str, Any]]:
    """A group's events and the checkpoints each site recorded, oldest first."""
    rows = [{**r, "aggregate": "group"} for r in await sm.projection.events("group", name)]
    for log_id in CheckpointLog.ids_of(name):
        rows += [
            {**r, "aggregate": log_id} for r in await sm.projection.events("checkpoints", log_id)
        ]
    return sorted(rows, key=lambda r: r["ts"])


async def operation_state(sm: Site, op: str) -> dict[str, Any] | None:
    """An operation's state from the projection, else from the ledger while Postgres catches up:
    our own events can come back from the topic first, and the topic's reader writes them to
    Postgres a moment after the request that started the operation has answered (a page opened
    at once must not say it does not exist; the console's browser test once did)."""
    state = await sm.projection.state("operation", op)
    if state is None:
        agg = sm.ledger.get("operation", op)
        state = agg.state() if agg.version else None
    return state


def make_api(sm: Site, recovery: Recovery, tokens: TokenStore) -> FastAPI:
    api = FastAPI(title=f"tapstream site manager ({sm.site})", version="1")
    # Open like /health, /docs and /openapi.json: Prometheus scrapes without credentials (keep the
    # port internal; the NetworkPolicy restricts it). Counters and gauges, no group's data.
    api.mount("/metrics", make_asgi_app())
    # Added first, so the request counter below wraps it and counts the 401s and 403s too.
    api.add_middleware(Authenticate, store=tokens, site=sm.site)

    @api.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.HTTP_REQUESTS.labels(
            request.method, getattr(route, "path", "other"), response.status_code
        ).inc()
        return response

    @api.exception_handler(RequestValidationError)
    async def unprocessable(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Without the rejected input: NaN or a lone surrogate in it cannot even be sent back as JSON.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @api.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(Invalid)
    async def invalid(_: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.exception_handler(ConcurrencyError)
    async def stale(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @api.exception_handler(DomainError)
    async def refused(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def group_cmd(name: str, cmd: c.Command, version: int | None) -> dict[str, Any]:
        agg = await sm.execute("group", name, cmd, version)
        return agg.state()

    async def group_state(name: str) -> dict[str, Any]:
        return await live_group(sm, name)

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "site": sm.site,
            "ready": sm.ready,
            "caught_up": sm.events.caught_up.is_set(),
            "aggregates": len(sm.ledger.entries),
            "conflicts": len(sm.ledger.conflicts),
            "infra": infra(),
        }

    def infra() -> dict[str, Any]:
        """Kafka, Postgres and the mirror into this site, when the console probes them (infra.py)."""
        telemetry = getattr(sm, "telemetry", None)
        return dict(telemetry.infra.latest) if telemetry is not None else {}

    @api.get("/conflicts")
    async def conflicts() -> list[dict[str, Any]]:
        """Events kept aside: another event already held their version here (two sites decided
        concurrently). Never merged; the operator re-issues the change that lost."""
        return await sm.projection.conflicts()

    @api.get("/sites")
    async def sites() -> list[dict[str, Any]]:
        return await sm.projection.states("site")

    @api.get("/groups")
    async def groups() -> list[dict[str, Any]]:
        return [g for g in await sm.projection.states("group") if g["status"] != "deleted"]

    @api.post("/groups", status_code=201)
    async def create_group(body: GroupIn) -> dict[str, Any]:
        return await group_cmd(
            body.name,
            c.CreateGroup(
                body.mode, body.rpo_target_s, body.journal_history_s, body.checkpoint_interval_s
            ),
            None,
        )

    @api.get("/groups/{name}")
    async def show_group(name: NamePath) -> dict[str, Any]:
        return await group_state(name)

    @api.patch("/groups/{name}")
    async def change_group(
        name: NamePath, body: GroupSettingsIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.ChangeGroupSettings(**body.model_dump()), if_match)

    @api.delete("/groups/{name}")
    async def delete_group(name: NamePath, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.DeleteGroup(), if_match)

    @api.get("/groups/{name}/events")
    async def group_events(name: NamePath) -> list[dict[str, Any]]:
        """The group's trail: its own events and the checkpoints each site recorded, by time."""
        return await group_trail(sm, name)

    @api.post("/groups/{name}/vms", status_code=201)
    async def add_vm(name: NamePath, body: VmIn, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.AddVm(body.vm, body.target_vm), if_match)

    @api.delete("/groups/{name}/vms/{vm}")
    async def remove_vm(name: NamePath, vm: NamePath, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.RemoveVm(vm), if_match)

    @api.put("/groups/{name}/vms/{vm}/target")
    async def pair(
        name: NamePath, vm: NamePath, body: TargetIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.PairTarget(vm, body.target_vm), if_match)

    @api.put("/groups/{name}/vms/{vm}/spec")
    async def define_vm(
        name: NamePath, vm: NamePath, body: VmSpecIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.DefineVm(vm, body.model_dump()), if_match)

    @api.delete("/groups/{name}/vms/{vm}/spec")
    async def undefine_vm(name: NamePath, vm: NamePath, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.UndefineVm(vm), if_match)

    @api.post("/groups/{name}/vms/{vm}/volumes", status_code=201)
    async def add_volume(
        name: NamePath, vm: NamePath, body: VolumeIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(
            name, c.AddVolume(vm, body.volume, body.path, body.size, body.target_path), if_match
        )

    @api.delete("/groups/{name}/vms/{vm}/volumes/{volume}")
    async def remove_volume(
        name: NamePath, vm: NamePath, volume: NamePath, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.RemoveVolume(vm, volume), if_match)

    @api.post("/groups/{name}/pause")
    async def pause(
        name: NamePath, body: PauseIn | None = None, if_match: IfMatch = None
    ) -> dict[str, Any]:
        state = await group_cmd(name, c.PauseProtection(body.reason if body else ""), if_match)
        await recovery.control(name, "PAUSE")
        return state

    @api.post("/groups/{name}/resume")
    async def resume(name: NamePath, if_match: IfMatch = None) -> dict[str, Any]:
        state = await group_cmd(name, c.ResumeProtection(), if_match)
        await recovery.control(name, "RESUME")
        return state

    @api.post("/groups/{name}/checkpoints", status_code=201)
    async def checkpoint(name: NamePath, body: CheckpointIn) -> dict[str, Any]:
        await group_state(name)
        return {"checkpoint_id": await recovery.checkpoint(name, body.tag)}

    @api.get("/groups/{name}/checkpoints")
    async def checkpoints(name: NamePath) -> list[dict[str, Any]]:
        await group_state(name)
        return await recovery.checkpoints(name)

    @api.get("/groups/{name}/status")
    async def status(name: NamePath) -> dict[str, Any]:
        return await recovery.status(await group_state(name))

    # --- recovery operations: 202 + an operation to follow ---------------------------------------
    @api.post("/groups/{name}/failover-test", status_code=202)
    async def failover_test_start(name: NamePath, body: RecoveryIn | None = None) -> dict[str, Any]:
        return await recovery.begin(
            "failover-test", await group_state(name), (body or RecoveryIn()).checkpoint
        )

    @api.delete("/groups/{name}/failover-test", status_code=202)
    async def failover_test_stop(name: NamePath) -> dict[str, Any]:
        return await recovery.stop_test(await group_state(name))

    @api.post("/groups/{name}/failover", status_code=202)
    async def failover(name: NamePath, body: RecoveryIn | None = None) -> dict[str, Any]:
        return await recovery.begin(
            "failover", await group_state(name), (body or RecoveryIn()).checkpoint
        )

    @api.post("/groups/{name}/move", status_code=202)
    async def move(name: NamePath) -> dict[str, Any]:
        return await recovery.begin("move", await group_state(name), "final")

    @api.post("/groups/{name}/reverse", status_code=202)
    async def reverse(name: NamePath) -> dict[str, Any]:
        return await recovery.begin("reverse", await group_state(name), "")

    @api.post("/groups/{name}/failback", status_code=202)
    async def failback(name: NamePath) -> dict[str, Any]:
        return await recovery.begin("failback", await group_state(name), "final")

    @api.get("/operations")
    async def operations() -> list[dict[str, Any]]:
        return await sm.projection.states("operation")

    @api.get("/operations/{op}")
    async def operation(op: NamePath) -> dict[str, Any]:
        state = await operation_state(sm, op)
        if state is None:
            raise HTTPException(
                404, f"no operation {op}; list them with `tapstream operation list`"
            )
        return {**state, "events": await sm.projection.events("operation", op)}

    # --- who may call this API (admin; the first token is issued on the host, see auth.py) -------
    @api.get("/tokens")
    async def list_tokens() -> list[dict[str, Any]]:
        """Names, roles and creation times; never the tokens or their hashes."""
        return tokens.list()

    @api.post("/tokens", status_code=201)
    async def issue_token(body: TokenIn) -> dict[str, Any]:
        """A new token, shown in this answer only (the site manager keeps its hash)."""
        try:
            token = tokens.issue(body.name, auth.Role.parse(body.role))
        except TokenError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("API token issued", token=body.name, role=body.role, by=ACTOR.get())
        return {**tokens.tokens()[body.name].public(), "token": token}

    @api.delete("/tokens/{name}")
    async def revoke_token(name: NamePath) -> dict[str, Any]:
        try:
            gone = tokens.revoke(name)
        except TokenError as exc:
            raise HTTPException(404, str(exc)) from None
        log.warning("API token revoked", token=name, by=ACTOR.get())
        return {**gone.public(), "revoked": True}

    return api

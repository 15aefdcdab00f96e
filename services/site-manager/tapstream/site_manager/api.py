"""The REST API (FastAPI; OpenAPI at /docs and /openapi.json). Every change is a command on an
aggregate; `If-Match: <version>` makes it conditional (optimistic concurrency: 409 when stale).
Errors are JSON `{"detail": ...}` whose text says what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from pydantic import BaseModel, Field

from tapstream.site_manager import metrics
from tapstream.site_manager.domain import (
    CheckpointLog,
    ConcurrencyError,
    DomainError,
    Invalid,
    NotFound,
)
from tapstream.site_manager.domain import commands as c

if TYPE_CHECKING:
    from tapstream.site_manager.service import SiteManager


IfMatch = Annotated[int | None, Header(alias="If-Match", description="Expected aggregate version")]


class GroupIn(BaseModel):
    name: str
    mode: str = Field(
        "sync",
        description="sync: the VM's write is acked after Kafka; async: after the local write",
    )
    rpo_target_s: float = 30.0
    journal_history_s: float = 3600.0
    checkpoint_interval_s: float = 5.0


class GroupSettingsIn(BaseModel):
    mode: str | None = None
    rpo_target_s: float | None = None
    journal_history_s: float | None = None
    checkpoint_interval_s: float | None = None


class VmIn(BaseModel):
    vm: str
    target_vm: str = ""


class TargetIn(BaseModel):
    target_vm: str


class VolumeIn(BaseModel):
    volume: str
    path: str = Field(description="Disk image at the protected site")
    size: int = 0
    target_path: str = Field(
        "", description="Where the recovery site puts the promoted volume (default: its state dir)"
    )


class PauseIn(BaseModel):
    reason: str = ""


class CheckpointIn(BaseModel):
    tag: str | None = None


class RecoveryIn(BaseModel):
    checkpoint: str = Field(default="latest", description="Checkpoint id, tag or latest")


def make_api(sm: SiteManager) -> FastAPI:
    api = FastAPI(title=f"tapstream site manager ({sm.site})", version="1")
    api.mount("/metrics", make_asgi_app())

    @api.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.HTTP_REQUESTS.labels(
            request.method, getattr(route, "path", "other"), response.status_code
        ).inc()
        return response

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
        state = await sm.projection.state("group", name)
        if state is None or state["status"] == "deleted":
            raise HTTPException(
                404, f"no protection group {name!r}; list them with `tapstream group list`"
            )
        return state

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "site": sm.site,
            "ready": sm.ready,
            "caught_up": sm.events.caught_up.is_set(),
            "aggregates": len(sm.ledger.entries),
            "conflicts": len(sm.ledger.conflicts),
        }

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
    async def show_group(name: str) -> dict[str, Any]:
        return await group_state(name)

    @api.patch("/groups/{name}")
    async def change_group(
        name: str, body: GroupSettingsIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.ChangeGroupSettings(**body.model_dump()), if_match)

    @api.delete("/groups/{name}")
    async def delete_group(name: str, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.DeleteGroup(), if_match)

    @api.get("/groups/{name}/events")
    async def group_events(name: str) -> list[dict[str, Any]]:
        """The group's trail: its own events and the checkpoints each site recorded, by time."""
        rows = [{**r, "aggregate": "group"} for r in await sm.projection.events("group", name)]
        for log_id in CheckpointLog.ids_of(name):
            rows += [
                {**r, "aggregate": log_id}
                for r in await sm.projection.events("checkpoints", log_id)
            ]
        return sorted(rows, key=lambda r: r["ts"])

    @api.post("/groups/{name}/vms", status_code=201)
    async def add_vm(name: str, body: VmIn, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.AddVm(body.vm, body.target_vm), if_match)

    @api.delete("/groups/{name}/vms/{vm}")
    async def remove_vm(name: str, vm: str, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.RemoveVm(vm), if_match)

    @api.put("/groups/{name}/vms/{vm}/target")
    async def pair(name: str, vm: str, body: TargetIn, if_match: IfMatch = None) -> dict[str, Any]:
        return await group_cmd(name, c.PairTarget(vm, body.target_vm), if_match)

    @api.post("/groups/{name}/vms/{vm}/volumes", status_code=201)
    async def add_volume(
        name: str, vm: str, body: VolumeIn, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(
            name, c.AddVolume(vm, body.volume, body.path, body.size, body.target_path), if_match
        )

    @api.delete("/groups/{name}/vms/{vm}/volumes/{volume}")
    async def remove_volume(
        name: str, vm: str, volume: str, if_match: IfMatch = None
    ) -> dict[str, Any]:
        return await group_cmd(name, c.RemoveVolume(vm, volume), if_match)

    @api.post("/groups/{name}/pause")
    async def pause(
        name: str, body: PauseIn | None = None, if_match: IfMatch = None
    ) -> dict[str, Any]:
        state = await group_cmd(name, c.PauseProtection(body.reason if body else ""), if_match)
        await sm.operations.control(name, "PAUSE")
        return state

    @api.post("/groups/{name}/resume")
    async def resume(name: str, if_match: IfMatch = None) -> dict[str, Any]:
        state = await group_cmd(name, c.ResumeProtection(), if_match)
        await sm.operations.control(name, "RESUME")
        return state

    @api.post("/groups/{name}/checkpoints", status_code=201)
    async def checkpoint(name: str, body: CheckpointIn) -> dict[str, Any]:
        await group_state(name)
        return {"checkpoint_id": await sm.operations.checkpoint(name, body.tag)}

    @api.get("/groups/{name}/checkpoints")
    async def checkpoints(name: str) -> list[dict[str, Any]]:
        await group_state(name)
        return await sm.operations.checkpoints(name)

    @api.get("/groups/{name}/status")
    async def status(name: str) -> dict[str, Any]:
        return await sm.operations.status(await group_state(name))

    # --- recovery operations: 202 + an operation to follow ---------------------------------------
    @api.post("/groups/{name}/failover-test", status_code=202)
    async def failover_test_start(name: str, body: RecoveryIn | None = None) -> dict[str, Any]:
        return await sm.operations.begin(
            "failover-test", await group_state(name), (body or RecoveryIn()).checkpoint
        )

    @api.delete("/groups/{name}/failover-test", status_code=202)
    async def failover_test_stop(name: str) -> dict[str, Any]:
        return await sm.operations.stop_test(await group_state(name))

    @api.post("/groups/{name}/failover", status_code=202)
    async def failover(name: str, body: RecoveryIn | None = None) -> dict[str, Any]:
        return await sm.operations.begin(
            "failover", await group_state(name), (body or RecoveryIn()).checkpoint
        )

    @api.post("/groups/{name}/move", status_code=202)
    async def move(name: str) -> dict[str, Any]:
        return await sm.operations.begin("move", await group_state(name), "final")

    @api.post("/groups/{name}/reverse", status_code=202)
    async def reverse(name: str) -> dict[str, Any]:
        return await sm.operations.begin("reverse", await group_state(name), "")

    @api.post("/groups/{name}/failback", status_code=202)
    async def failback(name: str) -> dict[str, Any]:
        return await sm.operations.begin("failback", await group_state(name), "final")

    @api.get("/operations")
    async def operations() -> list[dict[str, Any]]:
        return await sm.projection.states("operation")

    @api.get("/operations/{op}")
    async def operation(op: str) -> dict[str, Any]:
        state = await sm.projection.state("operation", op)
        if state is None:
            raise HTTPException(
                404, f"no operation {op}; list them with `tapstream operation list`"
            )
        return {**state, "events": await sm.projection.events("operation", op)}

    return api

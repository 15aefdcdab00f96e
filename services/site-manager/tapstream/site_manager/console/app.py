"""The web console: server-rendered pages (Jinja2) mounted at /console on the API's app and port.

It reads and acts through the same code the REST API calls (the projection, `api.live_group`,
`api.group_trail`, and the site's `Recovery`: status, checkpoints, begin, stop_test), with the API's
tokens and roles (`session`); what the pages compute from that data is in `views`, pure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tapstream.core.logging import get_logger
from tapstream.site_manager.api import Recovery, Site, group_trail, live_group, operation_state
from tapstream.site_manager.application import ACTOR
from tapstream.site_manager.auth import Token, TokenError, TokenStore
from tapstream.site_manager.console import session, views
from tapstream.site_manager.console.telemetry import Telemetry
from tapstream.site_manager.domain import DomainError

log = get_logger("tapstream.site_manager.console")
HERE = Path(__file__).parent
KINDS = ("failover-test", "failover-test-stop", "move", "failover", "reverse", "failback")


class Console:
    def __init__(
        self, sm: Site, recovery: Recovery, tokens: TokenStore, telemetry: Telemetry
    ) -> None:
        self.sm, self.recovery, self.tokens, self.telemetry = sm, recovery, tokens, telemetry
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(views=views, quote=quote)
        self._peers: dict[str, tuple[float, dict[str, Any]]] = {}

    # --- pages ----------------------------------------------------------------------------------
    def page(
        self, request: Request, name: str, who: Token | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        cookie = request.cookies.get(session.COOKIE) or ""
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "base": request.scope.get("root_path", ""),
                "site": self.sm.site,
                "who": who,
                "csrf": session.csrf_token(cookie) if who else "",
                "may": (lambda method, route: who is not None and session.may(who, method, route)),
                "now_s": time.time(),
                **ctx,
            },
            status_code=status,
        )

    async def peer_health(self, site: dict[str, Any]) -> dict[str, Any]:
        """The other site's /health (public, like the API's), asked at most every 5 s."""
        url = site.get("api_url") or ""
        seen = self._peers.get(url)
        if seen and time.monotonic() - seen[0] < 5:
            return seen[1]
        try:
            async with httpx.AsyncClient(timeout=1.5, verify=False) as client:  # health only
                r = await client.get(url + "/health")
                health = {**r.json(), "reachable": True}
        except (httpx.HTTPError, ValueError) as exc:
            health = {"reachable": False, "error": str(exc) or type(exc).__name__}
        self._peers[url] = (time.monotonic(), health)
        return health

    async def sites(self) -> list[dict[str, Any]]:
        out = []
        for s in await self.sm.projection.states("site"):
            if s["name"] == self.sm.site:
                health = {
                    "reachable": True,
                    "ready": self.sm.ready,
                    "caught_up": self.sm.events.caught_up.is_set(),
                    "conflicts": len(self.sm.ledger.conflicts),
                    "infra": self.telemetry.infra.latest,
                }
            else:
                health = await self.peer_health(s)
            out.append({**s, "health": health})
        return out

    async def peers(self) -> dict[str, str]:
        """Each site's API (and console) address, as it registered."""
        return {s["name"]: s["api_url"] for s in await self.sm.projection.states("site")}

    async def checkpoints(self, name: str) -> tuple[list[dict[str, Any]], str]:
        try:
            return await self.recovery.checkpoints(name), ""
        except Exception as exc:  # the journal's database down: the page says so, the rest shows
            return [], f"checkpoints unreadable: {exc}"

    async def status(self, group: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.recovery.status(group)
        except Exception as exc:
            return {"error": str(exc), "services": {}}

    async def group_row(self, g: dict[str, Any], now_s: float) -> dict[str, Any]:
        (cps, cp_error), status = await asyncio.gather(self.checkpoints(g["name"]), self.status(g))
        alerts = [a for a in self.telemetry.alerts if a.get("group") == g["name"]]
        return {
            "group": g,
            "rpo": views.live_rpo(self.telemetry.rpo.reports(g["name"]), g["rpo_target_s"], now_s),
            "window": views.journal_window(cps),
            "last_checkpoint": cps[-1] if cps else None,
            "checkpoints": cps,
            "checkpoint_error": cp_error,
            "status": status,
            "alerts": alerts,
        }


def make_console(sm: Site, recovery: Recovery, tokens: TokenStore, telemetry: Telemetry) -> FastAPI:
    """The console's app, to mount at /console beside the API."""
    con = Console(sm, recovery, tokens, telemetry)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def login_redirect(request: Request) -> RedirectResponse:
        base = request.scope.get("root_path", "")
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{base}/login?next={quote(here)}", status_code=303)

    def signed_in(request: Request) -> Token | Response:
        try:
            who = session.who(tokens, request.cookies.get(session.COOKIE))
        except TokenError as exc:
            return con.page(request, "error.html", None, 503, message=str(exc), refresh=False)
        return who if who is not None else login_redirect(request)

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def error(request: Request, who: Token | None, exc: Exception, status: int) -> HTMLResponse:
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return con.page(request, "error.html", who, status, message=detail, refresh=False)

    @app.exception_handler(Exception)
    async def broken(request: Request, exc: Exception) -> HTMLResponse:
        # Logged with its traceback (uvicorn's own logging is off), and a page, not a bare 500.
        log.exception("console page failed", path=request.url.path)
        message = (
            f"the console failed on this page ({exc!r}); the site manager's log has the details"
        )
        return con.page(request, "error.html", None, 500, message=message, refresh=False)

    # --- signing in -------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "") -> HTMLResponse:
        issued = bool(tokens.tokens())
        return con.page(
            request, "login.html", None, next=next, issued=issued, problem="", refresh=False
        )

    @app.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        if session.cross_site(request.headers.get("sec-fetch-site")):
            return error(request, None, PermissionError("sign in from this console's page"), 403)
        data = await form(request)
        token, nxt = data.get("token", "").strip(), data.get("next", "")
        try:
            who = session.who(tokens, token)
        except TokenError as exc:
            return con.page(request, "error.html", None, 503, message=str(exc), refresh=False)
        base = request.scope.get("root_path", "")
        if who is None:
            problem = (
                f"this token is not valid at the {sm.site} site (revoked, mistyped, or issued by "
                "the other site's manager)"
            )
            return con.page(
                request,
                "login.html",
                None,
                401,
                next=nxt,
                issued=True,
                problem=problem,
                refresh=False,
            )
        # Only a path of this console: never a redirect to another site.
        target = nxt if nxt.startswith(base + "/") and "//" not in nxt else base + "/"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            session.COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=base or "/",
        )
        log.info("console sign-in", token=who.name)
        return resp

    @app.post("/logout", response_model=None)
    async def logout(request: Request) -> Response:
        base = request.scope.get("root_path", "")
        resp = RedirectResponse(base + "/login", status_code=303)
        resp.delete_cookie(session.COOKIE, path=base or "/")
        return resp

    # --- overview ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, response_model=None)
    async def overview(request: Request, q: str = "") -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        now_s = time.time()
        groups = [
            g
            for g in await sm.projection.states("group")
            if g["status"] != "deleted" and q.lower() in g["name"].lower()
        ]
        rows = await asyncio.gather(*(con.group_row(g, now_s) for g in groups))
        return con.page(
            request,
            "overview.html",
            who,
            nav="overview",
            sites=await con.sites(),
            follows=telemetry.follows,
            rows=rows,
            q=q,
        )

    # --- one group --------------------------------------------------------------------------------
    @app.get("/groups/{name}", response_class=HTMLResponse, response_model=None)
    async def group(request: Request, name: str, window: str = "1h") -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        try:
            g = await live_group(sm, name)
        except HTTPException as exc:
            return error(request, who, exc, 404)
        now_s = time.time()
        span = views.WINDOWS.get(window, views.HOUR_S)
        row = await con.group_row(g, now_s)
        clean = views.last_clean(list(telemetry.alerts), name)
        replicas = row["status"].get("replicas") or {}
        return con.page(
            request,
            "group.html",
            who,
            row=row,
            window=window if window in views.WINDOWS else "1h",
            chart=views.rpo_chart(telemetry.rpo.samples(name), g["rpo_target_s"], now_s, span),
            marks=views.timeline(row["checkpoints"], now_s, clean, span),
            last_clean=clean,
            replicas=replicas,
            trail=(await group_trail(sm, name))[-60:][::-1],
            actions=views.actions(g),
            peers=await con.peers(),
        )

    # --- operations -------------------------------------------------------------------------------
    @app.get("/operations", response_class=HTMLResponse, response_model=None)
    async def operations(request: Request, q: str = "") -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        groups = [
            g
            for g in await sm.projection.states("group")
            if g["status"] != "deleted" and q.lower() in g["name"].lower()
        ]
        names = {g["name"] for g in groups}
        ops = [o for o in await sm.projection.states("operation") if o["group"] in names]
        started = await asyncio.gather(*(sm.projection.events("operation", o["id"]) for o in ops))
        when = {o["id"]: (ev[0]["ts"] if ev else 0) for o, ev in zip(ops, started, strict=True)}
        ops = sorted(ops, key=lambda o: when[o["id"]])  # the projection orders them by id
        return con.page(
            request,
            "operations.html",
            who,
            nav="operations",
            groups=[(g, views.actions(g)) for g in groups],
            ops=ops[::-1][:30],
            peers=await con.peers(),
            q=q,
        )

    @app.get("/operations/{op}", response_class=HTMLResponse, response_model=None)
    async def operation(request: Request, op: str) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        state = await operation_state(sm, op)
        if state is None:
            return error(request, who, HTTPException(404, f"no operation {op}"), 404)
        events = await sm.projection.events("operation", op)
        return con.page(
            request,
            "operation.html",
            who,
            op=state,
            events=events,
            exports=views.exports_of(state.get("result") or {}),
            advice=views.next_steps(state),
        )

    @app.get("/groups/{name}/confirm/{kind}", response_class=HTMLResponse, response_model=None)
    async def confirm(request: Request, name: str, kind: str, checkpoint: str = "") -> Response:
        """Choose the checkpoint (failover, failover test) and, for a failover, confirm it by name."""
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        try:
            g = await live_group(sm, name)
        except HTTPException as exc:
            return error(request, who, exc, 404)
        cps, cp_error = await con.checkpoints(name)
        usable = [cp for cp in cps if cp.get("restorable", True)][::-1]
        chosen = next(
            (cp for cp in usable if checkpoint in (cp["id"], cp.get("tag"))),
            usable[0] if usable else None,
        )
        return con.page(
            request,
            "confirm.html",
            who,
            refresh=False,
            group=g,
            kind=kind,
            checkpoints=usable[:50],
            chosen=chosen,
            checkpoint_error=cp_error,
            consequences=views.CONSEQUENCES.get(kind, ""),
        )

    @app.post("/groups/{name}/{kind}", response_model=None)
    async def act(request: Request, name: str, kind: str) -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        data = await form(request)
        if session.cross_site(request.headers.get("sec-fetch-site")) or not session.csrf_ok(
            request.cookies.get(session.COOKIE) or "", data.get("csrf")
        ):
            return error(request, who, ValueError("the form expired: reload the page"), 403)
        if kind not in KINDS:
            return error(request, who, HTTPException(404, f"no action {kind!r}"), 404)
        method, route = views.api_route(kind)
        refused = session.refusal(who, method, route, sm.site)
        if refused:
            return error(request, who, PermissionError(refused), 403)
        checkpoint = data.get("checkpoint") or "latest"
        if kind == "failover" and data.get("confirmed") != checkpoint:
            return error(
                request,
                who,
                ValueError("a failover must be confirmed on its page, naming its checkpoint"),
                400,
            )
        reset = ACTOR.set(who.name)  # the events it decides name the caller, as in the API
        try:
            g = await live_group(sm, name)
            if kind == "failover-test-stop":
                op = await recovery.stop_test(g)
            elif kind in ("failover-test", "failover"):
                op = await recovery.begin(kind, g, checkpoint)
            else:
                op = await recovery.begin(kind, g, "" if kind == "reverse" else "final")
        except HTTPException as exc:
            return error(request, who, exc, exc.status_code)
        except DomainError as exc:
            return error(request, who, exc, 409)
        finally:
            ACTOR.reset(reset)
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}/operations/{op['id']}", status_code=303)

    # --- alerts -----------------------------------------------------------------------------------
    @app.get("/alerts", response_class=HTMLResponse, response_model=None)
    async def alerts(request: Request, q: str = "") -> Response:
        who = signed_in(request)
        if isinstance(who, Response):
            return who
        groups = {g["name"]: g for g in await sm.projection.states("group")}
        live = {n for n, g in groups.items() if g["status"] != "deleted" and q.lower() in n.lower()}
        return con.page(
            request,
            "alerts.html",
            who,
            nav="alerts",
            alerts=views.alert_rows(list(telemetry.alerts), live),
            groups=groups,
            q=q,
        )

    return app

"""The operators' web console, served by each site manager at /console on the API's port."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse

from tapstream.site_manager.api import Recovery, Site
from tapstream.site_manager.auth import TokenStore
from tapstream.site_manager.console.app import make_console
from tapstream.site_manager.console.telemetry import Telemetry


def mount_console(
    api: FastAPI, sm: Site, recovery: Recovery, tokens: TokenStore, telemetry: Telemetry
) -> None:
    """The console at /console, and / sends a browser there. Neither is an API route: the API's
    bearer-token middleware lets them through and the console checks its own cookie."""

    async def home(_: Request) -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    api.add_route("/", home, methods=["GET"], include_in_schema=False)
    api.mount("/console", make_console(sm, recovery, tokens, telemetry))


__all__ = ["Telemetry", "mount_console"]

"""`tapstream token issue|list|revoke --site S`: the API tokens of a site manager (admin).

The first admin token of a site is issued on its host, without the API, by
`python -m tapstream.site_manager token issue NAME --role admin` (`host_app` below: it writes the
token store the site manager reads). A token is printed once, alone on stdout; keep it in
TAPSTREAM_API_TOKEN or the token file (~/.config/tapstream/token).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tapstream.cli.groups import Json, Site, call

if TYPE_CHECKING:
    from tapstream.site_manager.auth import TokenStore

app = typer.Typer(
    no_args_is_help=True,
    help="API tokens: who may read (viewer), operate (operator) or administer (admin) a site.",
)
host_app = typer.Typer(
    no_args_is_help=True,
    help="API tokens of this host's site manager, written to its token store (no API needed).",
)
err = Console(stderr=True)


class RoleName(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


RoleOpt = Annotated[
    RoleName,
    typer.Option(
        "--role",
        help="viewer: reads; operator: checkpoints, pause/resume, failover test, failover, move, "
        "reverse, failback; admin: also groups, VMs, volumes, pairing and tokens.",
    ),
]


def _print_issued(name: str, role: str, token: str, where: str) -> None:
    print(token)
    err.print(
        f"token [bold]{name}[/] ({role}) issued {where}; it is shown only now. Use it with "
        "`export TAPSTREAM_API_TOKEN=<token>` or keep it in ~/.config/tapstream/token (mode 0600)."
    )


def _table(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "role", "created")
    for r in rows:
        table.add_row(r["name"], r["role"], r["created"])
    Console().print(table)


# --- through the API -----------------------------------------------------------------------------
@app.command("issue")
def issue(name: str, role: RoleOpt = RoleName.viewer, site: Site = "protected") -> None:
    """A new token at that site's manager (admin); printed once."""
    got = call(site, "POST", "/tokens", {"name": name, "role": role.value})
    _print_issued(got["name"], got["role"], got["token"], f"by the {site} site manager")


@app.command("list")
def list_(site: Site = "protected", as_json: Json = False) -> None:
    """Names, roles and creation times (admin); never the tokens."""
    _table(call(site, "GET", "/tokens"), as_json)


@app.command("revoke")
def revoke(name: str, site: Site = "protected") -> None:
    """Revoke a token at once: its next request is refused (admin)."""
    call(site, "DELETE", f"/tokens/{name}")
    err.print(f"token {name} revoked at the {site} site")


# --- on the host, without the API ----------------------------------------------------------------
def _store() -> TokenStore:
    from tapstream.core.settings import load
    from tapstream.site_manager.auth import TokenStore
    from tapstream.site_manager.settings import SiteManagerSettings

    return TokenStore(load(SiteManagerSettings).tokens_file)


@host_app.command("issue")
def host_issue(name: str, role: RoleOpt = RoleName.viewer) -> None:
    """A new token in this host's token store (the site manager reads it at once); printed once."""
    from tapstream.site_manager.auth import Role, TokenError

    store = _store()
    try:
        token = store.issue(name, Role.parse(role.value))
    except TokenError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    _print_issued(name, role.value, token, f"in {store.path}")


@host_app.command("list")
def host_list(as_json: Json = False) -> None:
    """The tokens in this host's token store."""
    _table(_store().list(), as_json)


@host_app.command("revoke")
def host_revoke(name: str) -> None:
    """Remove a token from this host's token store."""
    from tapstream.site_manager.auth import TokenError

    try:
        _store().revoke(name)
    except TokenError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    err.print(f"token {name} revoked")

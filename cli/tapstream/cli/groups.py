"""`tapstream group ...`, `tapstream failover-test start|stop`, `failover`, `move`, `reverse`,
`failback`, `operation ...`: a client of the site managers' REST API (tables for people, --json for
scripts). Group changes go to the protected site's manager unless --site says otherwise; failover
test, failover and move to the recovery site's; reverse and failback to the original site's."""

from __future__ import annotations

import json
import ssl
import time
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from tapstream.core.settings import load

if TYPE_CHECKING:
    from tapstream.site_manager.settings import SiteManagerSettings

group_app = typer.Typer(
    no_args_is_help=True, help="Protection groups: VMs, volumes, pairing, pause/resume."
)
test_app = typer.Typer(
    no_args_is_help=True,
    help="Failover test: a group's checkpoint as NBD exports at the "
    "recovery site, while replication continues.",
)
operation_app = typer.Typer(
    no_args_is_help=True, help="Long-running operations and their event trail."
)
console = Console()
err = Console(stderr=True)

Site = Annotated[
    str, typer.Option("--site", help="Which site's manager to ask: protected or recovery.")
]
Json = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]
Version = Annotated[
    int | None, typer.Option("--if-version", help="Refuse unless the group is at this version.")
]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the operation until it ends.")]


def _settings() -> SiteManagerSettings:
    from tapstream.site_manager.settings import SiteManagerSettings

    return load(SiteManagerSettings)


def api_token(s: SiteManagerSettings) -> str | None:
    """TAPSTREAM_API_TOKEN, else the token file (first line), else none."""
    if s.api_token is not None and s.api_token.get_secret_value():
        return s.api_token.get_secret_value().strip()
    path = s.api_token_file.expanduser()
    try:
        return path.read_text().strip().splitlines()[0] or None
    except (OSError, IndexError):
        return None


def client_options(s: SiteManagerSettings) -> dict[str, Any]:
    """httpx options for the site managers: the bearer token, the CA that signed their HTTPS
    certificates (default: the system's; a server certificate is always verified), mTLS."""
    token = api_token(s)
    opts: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {token}"} if token else {},
        "timeout": s.site_manager_timeout_s,
    }
    if s.api_ca_file is not None:
        opts["verify"] = ssl.create_default_context(cafile=str(s.api_ca_file.expanduser()))
    if s.api_client_cert is not None:
        ctx = opts.get("verify") or ssl.create_default_context()
        ctx.load_cert_chain(
            str(s.api_client_cert.expanduser()),
            str(s.api_client_key.expanduser()) if s.api_client_key else None,
        )
        opts["verify"] = ctx
    return opts


def call(
    site: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    version: int | None = None,
) -> Any:
    """One REST call; errors end the command with the server's advice."""
    s = _settings()
    url = s.url(site)
    opts = client_options(s)
    if version is not None:
        opts["headers"]["If-Match"] = str(version)
    try:
        r = httpx.request(method, url + path, json=body, **opts)
    except httpx.TransportError as exc:
        hint = (
            " The server's certificate was not trusted: point TAPSTREAM_API_CA_FILE at the CA "
            "that signed it."
            if "CERTIFICATE_VERIFY_FAILED" in str(exc)
            else ""
        )
        err.print(
            f"[red]no answer from the {site} site manager at {url}[/] ({exc.__class__.__name__}). Start it with "
            f"`TAPSTREAM_SITE={site} python -m tapstream.site_manager`, or point "
            f"TAPSTREAM_SITE_MANAGER_{site.upper()}_URL at it.{hint}"
        )
        raise typer.Exit(2) from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
            )
        err.print(f"[red]{method} {path} refused ({r.status_code}):[/] {detail}")
        if r.status_code == 401:
            source = (
                "TAPSTREAM_API_TOKEN"
                if s.api_token is not None
                else f"the token file {s.api_token_file}"
                if api_token(s)
                else "no token: neither TAPSTREAM_API_TOKEN nor the token file "
                f"{s.api_token_file} is set"
            )
            err.print(
                f"Sent {source}. Set TAPSTREAM_API_TOKEN to a token of the {site} site (or write "
                f"it to {s.api_token_file}); an admin issues one with `tapstream token issue NAME "
                f"--role viewer|operator|admin --site {site}`."
            )
        elif r.status_code == 403:
            err.print("Ask an admin of that site for a token with the role named above.")
        raise typer.Exit(1)
    return r.json()


def _show_group(g: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(g, indent=2))
        return
    console.print(
        f"[bold]{g['name']}[/] v{g['version']}  {g['status']}  active at {g['active_site']}  "
        f"mode {g['mode']}  RPO target {g['rpo_target_s']}s  journal {g['journal_history_s']}s  "
        f"checkpoint every {g['checkpoint_interval_s']}s"
    )
    table = Table("VM", "target VM", "volume", "path", "size", "target path")
    for vm in g["vms"]:
        vols = vm["volumes"] or [{"name": "-", "path": "", "size": 0, "target_path": ""}]
        for v in vols:
            table.add_row(
                vm["name"],
                vm["target_vm"] or "[yellow]unpaired[/]",
                v["name"],
                v["path"],
                str(v["size"] or ""),
                v["target_path"],
            )
    console.print(table)
    for vm in g["vms"]:
        if spec := vm.get("spec"):
            console.print(f"VM {vm['name']} at the recovery site: {describe_spec(spec)}")
    if g.get("failover_test"):
        t = g["failover_test"]
        console.print(
            f"failover test {t['operation']} at checkpoint {t['checkpoint_id']}: "
            + ", ".join(f"{k}={u}" for k, u in t["exports"].items())
        )
    if g.get("exports"):
        console.print("exports: " + ", ".join(f"{k}={u}" for k, u in g["exports"].items()))


def describe_spec(spec: dict[str, Any]) -> str:
    parts = [
        f"{spec['vcpus']} vCPU",
        f"{spec['memory_mib']} MiB",
        f"disks {', '.join(spec['disks']) or 'all'}",
        f"network {spec['network'] or 'none'}",
        f"boot order {spec['boot_order']}",
    ]
    if spec.get("kernel"):
        parts.append(f"kernel {spec['kernel']}")
    return ", ".join(parts)


def show_vms(vms: dict[str, dict[str, dict[str, str]]]) -> None:
    """`vms` of a group status: per site, domain -> {vm, purpose, state, live}."""
    rows = [(site, d, v) for site, doms in vms.items() for d, v in sorted(doms.items())]
    if not rows:
        return
    table = Table("site", "VM", "protects", "purpose", "recorded", "now", title="VMs")
    for site, d, v in rows:
        table.add_row(
            site, d, v.get("vm", ""), v.get("purpose", ""), v.get("state", ""), v.get("live", "")
        )
    console.print(table)


# --- groups ---------------------------------------------------------------------------------------
@group_app.command("create")
def create(
    name: str,
    mode: Annotated[str, typer.Option(help="sync or async")] = "sync",
    rpo_target: Annotated[float, typer.Option("--rpo-target", help="seconds")] = 30.0,
    journal_history: Annotated[float, typer.Option("--journal-history", help="seconds")] = 3600.0,
    checkpoint_interval: Annotated[
        float, typer.Option("--checkpoint-interval", help="seconds")
    ] = 5.0,
    site: Site = "protected",
    as_json: Json = False,
) -> None:
    """Create protection group NAME (then add VMs and volumes)."""
    _show_group(
        call(
            site,
            "POST",
            "/groups",
            {
                "name": name,
                "mode": mode,
                "rpo_target_s": rpo_target,
                "journal_history_s": journal_history,
                "checkpoint_interval_s": checkpoint_interval,
            },
        ),
        as_json,
    )


@group_app.command("list")
def list_groups(site: Site = "protected", as_json: Json = False) -> None:
    """Every protection group this site's manager knows."""
    groups = call(site, "GET", "/groups")
    if as_json:
        print(json.dumps(groups, indent=2))
        return
    table = Table(
        "group", "status", "active site", "mode", "VMs", "volumes", "RPO target s", "version"
    )
    for g in groups:
        table.add_row(
            g["name"],
            g["status"],
            g["active_site"],
            g["mode"],
            str(len(g["vms"])),
            str(sum(len(vm["volumes"]) for vm in g["vms"])),
            str(g["rpo_target_s"]),
            str(g["version"]),
        )
    console.print(table)


@group_app.command("show")
def show(name: str, site: Site = "protected", as_json: Json = False) -> None:
    """VMs, volumes, pairing, state and exports of a group."""
    _show_group(call(site, "GET", f"/groups/{name}"), as_json)


@group_app.command("status")
def group_status(name: str, site: Site = "protected", as_json: Json = False) -> None:
    """The group as this site runs it: services, exports, replica positions, reverse replication."""
    st = call(site, "GET", f"/groups/{name}/status")
    if as_json:
        print(json.dumps(st, indent=2))
        return
    _show_group(st["group"], False)
    for key in ("services", "exports", "replicas", "reverse"):
        if st.get(key):
            console.print(f"{key}: {json.dumps(st[key])}")
    show_vms(st.get("vms") or {})


@group_app.command("set")
def set_settings(
    name: str,
    mode: Annotated[str | None, typer.Option()] = None,
    rpo_target: Annotated[float | None, typer.Option("--rpo-target")] = None,
    journal_history: Annotated[float | None, typer.Option("--journal-history")] = None,
    checkpoint_interval: Annotated[float | None, typer.Option("--checkpoint-interval")] = None,
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Change mode, RPO target, journal history or checkpoint interval."""
    _show_group(
        call(
            site,
            "PATCH",
            f"/groups/{name}",
            {
                "mode": mode,
                "rpo_target_s": rpo_target,
                "journal_history_s": journal_history,
                "checkpoint_interval_s": checkpoint_interval,
            },
            version,
        ),
        as_json,
    )


@group_app.command("delete")
def delete(name: str, site: Site = "protected", version: Version = None) -> None:
    """Delete a group (its topics keep its history)."""
    call(site, "DELETE", f"/groups/{name}", version=version)
    console.print(f"deleted {name}")


@group_app.command("add-vm")
def add_vm(
    name: str,
    vm: str,
    target: Annotated[str, typer.Option("--target", help="VM at the recovery site")] = "",
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Add a protected VM (and pair it with its recovery-site VM)."""
    _show_group(
        call(site, "POST", f"/groups/{name}/vms", {"vm": vm, "target_vm": target}, version), as_json
    )


@group_app.command("remove-vm")
def remove_vm(
    name: str, vm: str, site: Site = "protected", version: Version = None, as_json: Json = False
) -> None:
    """Remove a VM and its volumes from the group."""
    _show_group(call(site, "DELETE", f"/groups/{name}/vms/{vm}", version=version), as_json)


@group_app.command("pair")
def pair(
    name: str,
    vm: str,
    target: str,
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Pair protected VM with its TARGET VM at the recovery site."""
    _show_group(
        call(site, "PUT", f"/groups/{name}/vms/{vm}/target", {"target_vm": target}, version),
        as_json,
    )


@group_app.command("add-volume")
def add_volume(
    name: str,
    vm: str,
    volume: str,
    path: str,
    size: Annotated[int, typer.Option(help="bytes (informational)")] = 0,
    target_path: Annotated[
        str, typer.Option("--target-path", help="promoted volume at the recovery site")
    ] = "",
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Protect VOLUME of VM, whose disk image is PATH at the protected site."""
    _show_group(
        call(
            site,
            "POST",
            f"/groups/{name}/vms/{vm}/volumes",
            {"volume": volume, "path": path, "size": size, "target_path": target_path},
            version,
        ),
        as_json,
    )


@group_app.command("define-vm")
def define_vm(
    name: str,
    vm: str,
    vcpus: Annotated[int, typer.Option(help="virtual CPUs")] = 1,
    memory: Annotated[int, typer.Option("--memory", help="MiB")] = 512,
    disk: Annotated[
        list[str] | None,
        typer.Option("--disk", help="a volume of VM, in disk order (repeat); default: all"),
    ] = None,
    network: Annotated[
        str, typer.Option(help="libvirt network at the recovery site (default: none)")
    ] = "",
    boot_order: Annotated[int, typer.Option("--boot-order", help="lower boots first")] = 0,
    kernel: Annotated[str, typer.Option(help="direct kernel boot: path at the recovery site")] = "",
    initrd: Annotated[str, typer.Option(help="its initrd")] = "",
    cmdline: Annotated[str, typer.Option(help="its kernel command line")] = "",
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """How VM comes up at the recovery site when a failover, move or failover test runs (with
    TAPSTREAM_SITE_MANAGER_VM_DRIVER=libvirt or exec there): replaces an earlier definition."""
    spec = {
        "vcpus": vcpus,
        "memory_mib": memory,
        "disks": disk or [],
        "network": network,
        "boot_order": boot_order,
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": cmdline,
    }
    _show_group(call(site, "PUT", f"/groups/{name}/vms/{vm}/spec", spec, version), as_json)


@group_app.command("undefine-vm")
def undefine_vm(
    name: str, vm: str, site: Site = "protected", version: Version = None, as_json: Json = False
) -> None:
    """Forget how VM comes up at the recovery site: a failover serves its disks only."""
    _show_group(call(site, "DELETE", f"/groups/{name}/vms/{vm}/spec", version=version), as_json)


@group_app.command("remove-volume")
def remove_volume(
    name: str,
    vm: str,
    volume: str,
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Stop protecting VOLUME of VM."""
    _show_group(
        call(site, "DELETE", f"/groups/{name}/vms/{vm}/volumes/{volume}", version=version), as_json
    )


@group_app.command("pause")
def pause(
    name: str,
    reason: str = "",
    site: Site = "protected",
    version: Version = None,
    as_json: Json = False,
) -> None:
    """Pause protection: no automatic checkpoints; PAUSE goes to the group's tappers and VDSAs."""
    _show_group(call(site, "POST", f"/groups/{name}/pause", {"reason": reason}, version), as_json)


@group_app.command("resume")
def resume(
    name: str, site: Site = "protected", version: Version = None, as_json: Json = False
) -> None:
    """Resume protection."""
    _show_group(call(site, "POST", f"/groups/{name}/resume", version=version), as_json)


@group_app.command("checkpoint")
def checkpoint(
    name: str,
    tag: Annotated[str | None, typer.Option(help="e.g. before-upgrade")] = None,
    site: Site = "protected",
    as_json: Json = False,
) -> None:
    """Take a crash-consistent checkpoint of the group now (recorded in its history)."""
    res = call(site, "POST", f"/groups/{name}/checkpoints", {"tag": tag})
    print(json.dumps(res) if as_json else res["checkpoint_id"])


@group_app.command("checkpoints")
def checkpoints(name: str, site: Site = "recovery", as_json: Json = False) -> None:
    """Checkpoints of the group (the recovery site's journal)."""
    rows = call(site, "GET", f"/groups/{name}/checkpoints")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "tag", "volumes", "restorable")
    for r in rows:
        table.add_row(
            r["id"],
            r.get("tag") or "",
            ", ".join(r.get("volumes", [])),
            str(r.get("restorable", "")),
        )
    console.print(table)


@group_app.command("events")
def events(name: str, site: Site = "protected", as_json: Json = False) -> None:
    """The group's event trail (its aggregate's events)."""
    rows = call(site, "GET", f"/groups/{name}/events")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("v", "type", "site", "actor", "payload")
    for r in rows:
        table.add_row(
            str(r["version"]), r["type"], r["site"], r.get("actor") or "", json.dumps(r["payload"])
        )
    console.print(table)


# --- operations -----------------------------------------------------------------------------------
def follow(
    site: str, op: dict[str, Any], wait: bool, as_json: bool, timeout: float = 600
) -> dict[str, Any]:
    """Poll an operation until it ends, showing its steps; exit 1 if it failed."""
    seen = 0
    deadline = time.monotonic() + timeout
    with console.status(f"{op['kind']} of {op['group']} ({op['id']})", spinner="dots") as status:
        while wait and op["status"] == "running":
            if time.monotonic() > deadline:
                err.print(
                    f"[yellow]still running after {timeout:.0f}s[/]: follow it with `tapstream operation show "
                    f"{op['id']} --site {site}`"
                )
                raise typer.Exit(3)
            time.sleep(0.3)
            op = call(site, "GET", f"/operations/{op['id']}")
            for step in op["steps"][seen:]:
                if not as_json:
                    total = f" {step['done']}/{step['total']}" if step["total"] else ""
                    console.print(f"  {step['step']}{total} {step['message']}")
                status.update(f"{op['kind']} of {op['group']}: {step['step']}")
            seen = len(op["steps"])
    if as_json:
        print(json.dumps(op, indent=2))
    elif op["status"] == "succeeded":
        console.print(
            f"[green]{op['kind']} of {op['group']} succeeded[/] "
            + " ".join(f"{k}={v}" for k, v in op["result"].items())
        )
    elif op["status"] == "failed":
        err.print(f"[red]{op['kind']} of {op['group']} failed:[/] {op['error']}")
    else:
        console.print(
            f"{op['kind']} of {op['group']} started: operation {op['id']} "
            f"(`tapstream operation show {op['id']} --site {site}`)"
        )
    if op["status"] == "failed":
        raise typer.Exit(1)
    return op


@test_app.command("start")
def test_start(
    group: str,
    checkpoint: Annotated[str, typer.Option(help="id, tag or latest")] = "latest",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Expose each volume of GROUP at a checkpoint as an NBD export at the recovery site (writes go to a
    scratch overlay, thrown away by `stop`)."""
    follow(
        "recovery",
        call("recovery", "POST", f"/groups/{group}/failover-test", {"checkpoint": checkpoint}),
        wait,
        as_json,
    )


@test_app.command("stop")
def test_stop(group: str, wait: Wait = True, as_json: Json = False) -> None:
    """End the failover test: exports stop, overlays are deleted, the replica was never touched."""
    follow("recovery", call("recovery", "DELETE", f"/groups/{group}/failover-test"), wait, as_json)


def seen_by(site: str, op: dict[str, Any], timeout: float = 60) -> None:
    """After an operation decided at one site: wait (briefly) until `site` sees its outcome through
    MirrorMaker 2, so the next command sent there (`reverse` after `move`, `move` after `failback`)
    finds the group in its new state. A site that does not answer is no error: it is probably the
    one that failed, and it learns the outcome when it comes back."""
    if op["status"] != "succeeded":
        return
    want = "recovery" if op["kind"] in ("failover", "move") else "protected"
    s = _settings()
    url = f"{s.url(site)}/groups/{op['group']}"
    # With the caller's token and CA: without them every answer was a 401 and this waited it all out.
    opts = {**client_options(s), "timeout": 5}
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for the {site} site to see the {op['kind']}", spinner="dots"):
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url, **opts)
            except httpx.TransportError:
                err.print(f"[yellow]the {site} site manager does not answer[/]: it learns of the "
                          f"{op['kind']} through MirrorMaker 2 when it is back")  # fmt: skip
                return
            if r.status_code == 200 and r.json().get("active_site") == want:
                return
            time.sleep(0.3)
    err.print(f"[yellow]the {site} site does not see the {op['kind']} yet[/]: check MirrorMaker 2 "
              f"(`tapstream status`) before the next operation there")  # fmt: skip


def failover(
    group: str,
    checkpoint: Annotated[str, typer.Option(help="id, tag or latest")] = "latest",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Promote a checkpoint of GROUP to the recovery volumes, served by a tapper at the recovery site."""
    op = follow(
        "recovery",
        call("recovery", "POST", f"/groups/{group}/failover", {"checkpoint": checkpoint}),
        wait,
        as_json,
    )
    seen_by("protected", op)


def move(group: str, wait: Wait = True, as_json: Json = False) -> None:
    """Planned failover without data loss: stop writes, final checkpoint, wait until applied, fail over."""
    seen_by(
        "protected",
        follow("recovery", call("recovery", "POST", f"/groups/{group}/move"), wait, as_json),
    )


def reverse(group: str, wait: Wait = True, as_json: Json = False) -> None:
    """After a move: replicate the recovery site's writes back to the original volumes."""
    follow("protected", call("protected", "POST", f"/groups/{group}/reverse"), wait, as_json)


def failback(group: str, wait: Wait = True, as_json: Json = False) -> None:
    """Return GROUP to its original site with the data written at the recovery site."""
    seen_by(
        "recovery",
        follow("protected", call("protected", "POST", f"/groups/{group}/failback"), wait, as_json),
    )


@operation_app.command("list")
def operation_list(site: Site = "recovery", as_json: Json = False) -> None:
    """Operations this site's manager knows (both sites' operations: events are mirrored)."""
    ops = call(site, "GET", "/operations")
    if as_json:
        print(json.dumps(ops, indent=2))
        return
    table = Table("id", "kind", "group", "status", "last step", "error")
    for o in ops:
        table.add_row(
            o["id"],
            o["kind"],
            o["group"],
            o["status"],
            o["steps"][-1]["step"] if o["steps"] else "",
            o["error"],
        )
    console.print(table)


@operation_app.command("show")
def operation_show(op: str, site: Site = "recovery", as_json: Json = False) -> None:
    """One operation with its event trail."""
    o = call(site, "GET", f"/operations/{op}")
    if as_json:
        print(json.dumps(o, indent=2))
        return
    console.print(f"[bold]{o['kind']}[/] of {o['group']}: {o['status']} {o['error']}")
    for ev in o["events"]:
        console.print(f"  v{ev['version']} {ev['type']} {json.dumps(ev['payload'])}")

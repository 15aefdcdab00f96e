"""`python -m tapstream.localstack up [--registry]|down|status|env|kcat|tool --site S -- kafka-topics --list`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tapstream.core.settings import load
from tapstream.localstack.classpath import ClasspathError, resolve
from tapstream.localstack.kcat import KcatError, binary
from tapstream.localstack.processes import rss_kib
from tapstream.localstack.readiness import NotReady
from tapstream.localstack.registry import RegistryError
from tapstream.localstack.secured_stack import SecuredSites
from tapstream.localstack.settings import LocalStackSettings
from tapstream.localstack.stack import Stack

app = typer.Typer(
    no_args_is_help=True, help="The local two-site stack (real Kafka, MM2, Postgres)."
)
console = Console(stderr=True)


def _stack(registry: bool = False) -> Stack:
    return Stack(load(LocalStackSettings, **({"local_registry": True} if registry else {})))


Secure = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="The secured stack: SASL_SSL + SCRAM, ACLs per service, its own home and ports.",
    ),
]


def _secured() -> SecuredSites:
    s = load(LocalStackSettings)
    return SecuredSites(
        s.root / "secured",
        {"protected": s.secured_kafka_ports[0], "recovery": s.secured_kafka_ports[1]},
        {"protected": s.secured_pg_ports[0], "recovery": s.secured_pg_ports[1]},
    )


def _secured_up() -> None:
    s = load(LocalStackSettings)
    sites = _secured()
    t0 = time.monotonic()
    try:
        with console.status("starting the secured stack") as status:
            sites.up(resolve(s.root, s.maven_repo), s.ready_timeout_s, status.update)
    except (NotReady, ClasspathError, RuntimeError, TimeoutError) as exc:
        console.print(f"[red]make up SECURE=1 failed:[/] {exc}")
        console.print("`make down SECURE=1` stops what was started.")
        raise typer.Exit(1) from None
    console.print(f"[green]secured stack up[/] in {time.monotonic() - t0:.1f}s")
    table = Table("component", "state", "pid", "port")
    for name, pid, port in sites.status():
        table.add_row(name, "[green]up[/]" if pid else "[red]down[/]", str(pid or "-"),
                      str(port or "-"))  # fmt: skip
    Console().print(table)
    Console().print(
        f"one settings file per service principal (SASL user, password, CA): {sites.home / 'env'}\n"
        f"  e.g. TAPSTREAM_ENV_FILE={sites.home / 'env' / 'cli.env'} .venv/bin/tapstream status"
    )


Registry = Annotated[
    bool,
    typer.Option(
        "--registry",
        help="Also run a schema registry (Apicurio, Confluent API) and build kcat with Avro.",
    ),
]


@app.command()
def up(secure: Secure = False, registry: Registry = False) -> None:
    """Start both sites (or reuse what runs) and wait until every part answers."""
    if secure:
        _secured_up()
        return
    stack = _stack(registry)
    t0 = time.monotonic()
    try:
        with console.status("starting") as status:
            stack.up(progress=lambda msg: status.update(msg))
            kcat_exe = binary(stack.s.kcat_cache) if registry else None
    except (NotReady, ClasspathError, RegistryError, KcatError, RuntimeError) as exc:
        console.print(f"[red]make up failed:[/] {exc}")
        console.print("`make status` shows what runs; `make down` stops what was started.")
        raise typer.Exit(1) from None
    console.print(
        f"[green]up[/] in {time.monotonic() - t0:.1f}s; settings in {stack.root / 'local.env'}"
    )
    _print_status(stack)
    if kcat_exe is not None:  # plain lines: commands to copy, not to be wrapped
        url = stack.registry.url
        print(f"schema registry: {url}")
        print(
            f"  services write the Confluent wire format with TAPSTREAM_SCHEMA_REGISTRY_URL={url}"
        )
        print(f"  kcat with Avro: {kcat_exe} -b {stack.bootstrap('protected')} -C -t tapstream.events "
              f"-s value=avro -r {url} -e")  # fmt: skip


@app.command()
def down(secure: Secure = False) -> None:
    """Stop everything this stack started (data is kept; `make clean` removes it)."""
    stopped = _secured().down() if secure else _stack().down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each component: up or down, pid, port, memory and its log file."""
    stack = _stack()
    if as_json:
        rows = [
            {"name": c.name, "up": c.up, "pid": c.pid, "port": c.port,
             "rss_kib": rss_kib(c.pid) if c.pid else 0, "log": str(c.log)}
            for c in stack.status()
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return
    _print_status(stack)


@app.command()
def env() -> None:
    """Print the TAPSTREAM_* variables of this stack (source them with `eval`)."""
    stack = _stack()
    for k, v in {**stack.env(), **stack.registry_env()}.items():
        print(f"export {k}={v}")


@app.command()
def kcat() -> None:
    """Print the path of kcat built with Avro support (`-s value=avro -r <registry URL>`)."""
    try:
        print(binary(load(LocalStackSettings).kcat_cache))
    except KcatError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tool(ctx: typer.Context, site: Annotated[str, typer.Option()] = "protected") -> None:
    """Run Kafka's own CLI tools, e.g. `tool --site recovery -- kafka-topics --list`."""
    raise SystemExit(_stack().tool(site, list(ctx.args)))


def _print_status(stack: Stack) -> None:
    table = Table("component", "state", "pid", "port", "RSS MiB", "log")
    for c in stack.status():
        table.add_row(
            c.name,
            "[green]up[/]" if c.up else "[red]down[/]",
            str(c.pid or "-"),
            str(c.port or "-"),
            f"{rss_kib(c.pid) / 1024:.0f}" if c.pid else "-",
            _short(c.log),
        )
    Console(width=max(Console().width, 120)).print(table)
    env_file = stack.root / "local.env"
    if env_file.exists():
        Console().print(
            f"settings: {_short(env_file)}  (kcat -b {stack.bootstrap('protected')} -L)"
        )


def _short(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


if __name__ == "__main__":
    app()

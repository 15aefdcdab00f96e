"""`python -m tapstream.localstack up|down|status|env|tool --site S -- kafka-topics --list`."""

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
from tapstream.localstack.classpath import ClasspathError
from tapstream.localstack.processes import rss_kib
from tapstream.localstack.readiness import NotReady
from tapstream.localstack.settings import LocalStackSettings
from tapstream.localstack.stack import Stack

app = typer.Typer(
    no_args_is_help=True, help="The local two-site stack (real Kafka, MM2, Postgres)."
)
console = Console(stderr=True)


def _stack() -> Stack:
    return Stack(load(LocalStackSettings))


@app.command()
def up() -> None:
    """Start both sites (or reuse what runs) and wait until every part answers."""
    stack = _stack()
    t0 = time.monotonic()
    try:
        with console.status("starting") as status:
            stack.up(progress=lambda msg: status.update(msg))
    except (NotReady, ClasspathError, RuntimeError) as exc:
        console.print(f"[red]make up failed:[/] {exc}")
        console.print("`make status` shows what runs; `make down` stops what was started.")
        raise typer.Exit(1) from None
    console.print(
        f"[green]up[/] in {time.monotonic() - t0:.1f}s; settings in {stack.root / 'local.env'}"
    )
    _print_status(stack)


@app.command()
def down() -> None:
    """Stop everything this stack started (data is kept; `make clean` removes it)."""
    stopped = _stack().down()
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
    for k, v in _stack().env().items():
        print(f"export {k}={v}")


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

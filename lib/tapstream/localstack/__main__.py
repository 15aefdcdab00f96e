"""`python -m tapstream.localstack up|down|status|env|tool --site S -- kafka-topics --list`."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tapstream.core.settings import load
from tapstream.localstack.processes import rss_kib
from tapstream.localstack.settings import LocalStackSettings
from tapstream.localstack.stack import Stack

app = typer.Typer(no_args_is_help=True, help="The local two-site stack (real Kafka, MM2, Postgres).")
console = Console(stderr=True)


def _stack() -> Stack:
    return Stack(load(LocalStackSettings))


@app.command()
def up() -> None:
    """Start both sites (or reuse what runs) and wait until every part answers."""
    stack = _stack()
    t0 = time.monotonic()
    with console.status("starting") as status:
        stack.up(progress=lambda msg: status.update(f"starting {msg}"))
    console.print(f"[green]up[/] in {time.monotonic() - t0:.1f}s; settings in {stack.root / 'local.env'}")
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
        print(json.dumps([{"name": c.name, "up": c.up, "pid": c.pid, "port": c.port,
                           "rss_kib": rss_kib(c.pid) if c.pid else 0, "log": str(c.log)}
                          for c in stack.status()], indent=2))
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
        table.add_row(c.name, "[green]up[/]" if c.up else "[red]down[/]", str(c.pid or "-"),
                      str(c.port or "-"), f"{rss_kib(c.pid) / 1024:.0f}" if c.pid else "-", str(c.log))
    Console().print(table)


if __name__ == "__main__":
    app()

"""`tapstream`: one command for operators; each area adds its sub-app here."""

from __future__ import annotations

import typer

from tapstream.cli import tail, tapper

app = typer.Typer(no_args_is_help=True, help="tapstream: continuous data protection on Kafka.")
app.add_typer(tapper.app, name="tapper")
app.command("tail")(tail.tail)


def main() -> None:
    app()

"""`tapstream`: one command for operators; each area adds its sub-app here."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="tapstream: continuous data protection on Kafka.")


def main() -> None:
    app()

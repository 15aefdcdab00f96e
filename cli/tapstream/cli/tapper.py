"""`tapstream tapper ...`: run the tapper, create volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapstream.cli.units import parse_size

app = typer.Typer(no_args_is_help=True, help="The tapper: NBD server that publishes every write.")


@app.command()
def serve() -> None:
    """Serve the volumes of TAPSTREAM_TAPPER_VOLUMES over NBD until SIGTERM."""
    from tapstream.tapper.__main__ import main

    main()


@app.command("create-volume")
def create_volume(
    path: Annotated[Path, typer.Argument(help="Image file to create (raw, sparse).")],
    size: Annotated[str, typer.Option("--size", help="e.g. 64M, 10G, 1073741824")],
) -> None:
    """Create a new raw volume of the given size (refuses to overwrite)."""
    from tapstream.tapper.volume import create

    try:
        create(path, parse_size(size))
    except FileExistsError:
        raise typer.BadParameter(f"{path} exists; pick another path or remove it first") from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"created {path} ({parse_size(size)} bytes)")

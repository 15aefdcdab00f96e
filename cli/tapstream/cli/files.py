"""`tapstream files GROUP VOLUME --checkpoint X ls [PATH] | get PATH | mount DIR | diff --to Y`: files
back from any checkpoint in the journal window, from the volume's instant view (nothing restored
first), read-only; `diff` lists what changed between two checkpoints (after an alert: which files)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tapstream.core.settings import TapstreamSettings, load
from tapstream.instant.tree_diff import Entry, compare_trees

app = typer.Typer(
    # GROUP VOLUME --checkpoint X get PATH --out FILE: the subcommand's options pass through.
    context_settings={"allow_interspersed_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
    help="Files of a volume at a checkpoint (ext2/3/4, read-only, no restore first).",
)
console = Console()


@dataclass(frozen=True)
class Target:
    group: str
    volume: str
    checkpoint: str


@app.callback()
def files(
    ctx: typer.Context,
    group: str,
    volume: str,
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="Checkpoint id, tag, or latest.")
    ] = "latest",
) -> None:
    """Files of VOLUME of GROUP at a checkpoint: ls, get or mount."""
    ctx.obj = Target(group, volume, checkpoint)


@contextlib.contextmanager
def _opened(t: Target, at: Path | None = None) -> Iterator[Path]:
    from tapstream.instant.filesystem import FilesystemError, mounted
    from tapstream.journal.restore import RestoreError

    try:
        with mounted(load(TapstreamSettings), t.group, t.volume, t.checkpoint, at) as root:
            yield root
    except (RestoreError, FilesystemError) as exc:
        console.print(f"[red]cannot open {t.group}/{t.volume} at {t.checkpoint}:[/] {exc}")
        raise typer.Exit(1) from None


def _inside(root: Path, path: str) -> Path:
    """PATH inside the filesystem; never a way out of it (.. or a symlink pointing elsewhere)."""
    target = (root / path.lstrip("/")).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise typer.BadParameter(f"{path} leads outside the volume's filesystem")
    return target


@app.command("ls")
def ls(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A directory in the filesystem.")] = "/",
) -> None:
    """List PATH as it was at the checkpoint."""
    t: Target = ctx.obj
    with _opened(t) as root:
        where = _inside(root, path)
        if not where.is_dir():
            console.print(f"[red]{path} is not a directory at {t.checkpoint}[/]")
            raise typer.Exit(1)
        table = Table(
            "mode",
            "size",
            "modified (UTC)",
            "name",
            title=f"{t.group}/{t.volume}:{path} at {t.checkpoint}",
        )
        for entry in sorted(where.iterdir()):
            st = entry.lstat()
            when = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(stat.filemode(st.st_mode), str(st.st_size), when, entry.name)
        console.print(table)


@app.command("get")
def get(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A file in the filesystem.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write it (default: its name, here).")
    ] = None,
) -> None:
    """Copy the file PATH as it was at the checkpoint (never overwrites)."""
    t: Target = ctx.obj
    dest = out or Path(Path(path).name)
    if dest.exists():
        raise typer.BadParameter(f"{dest} exists; choose another --out")
    with _opened(t) as root:
        src = _inside(root, path)
        if not src.is_file():
            console.print(f"[red]no file {path} at {t.checkpoint}[/]")
            raise typer.Exit(1)
        shutil.copyfile(src, dest)
    console.print(f"{path} at {t.checkpoint} -> {dest} ({dest.stat().st_size} bytes)")


@app.command("mount")
def mount(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="An empty directory to mount on.")],
) -> None:
    """Mount the filesystem at the checkpoint read-only on DIRECTORY until interrupted (Ctrl-C)."""
    t: Target = ctx.obj
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise typer.BadParameter(f"{directory} is not empty")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with _opened(t, directory):
        console.print(
            f"{t.group}/{t.volume} at {t.checkpoint} mounted read-only on {directory}; Ctrl-C unmounts"
        )
        stop.wait()
    console.print(f"unmounted {directory}")


def _entry(e: Entry | None) -> str:
    if e is None:
        return "-"
    when = datetime.fromtimestamp(e.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{e.kind} -> {e.target}" if e.kind == "link" else f"{e.size} B, {when}"


@app.command("diff")
def diff(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The later checkpoint (id, tag or latest).")],
    path: Annotated[str, typer.Argument(help="Compare below this directory only.")] = "/",
    content: Annotated[
        bool, typer.Option("--content", help="Also hash files whose size and time are equal.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Files added, removed or changed from --checkpoint to --to (after an encryption alert: from
    the last clean checkpoint to latest, the files it touched; `get` each from the clean one)."""
    t: Target = ctx.obj
    later = Target(t.group, t.volume, to)
    with _opened(t) as a, _opened(later) as b:
        _inside(a, path)
        _inside(b, path)
        changes = compare_trees(a, b, path, content)
    if as_json:
        print(json.dumps([asdict(c) for c in changes], indent=2))
        return
    table = Table(
        "change", "path", f"at {t.checkpoint}", f"at {to}",
        title=f"{t.group}/{t.volume}:{path} from {t.checkpoint} to {to}",
    )  # fmt: skip
    style = {"added": "green", "removed": "red", "changed": "yellow"}
    for c in changes:
        table.add_row(f"[{style[c.what]}]{c.what}[/]", c.path, _entry(c.before), _entry(c.after))
    console.print(table)
    counts = {w: sum(c.what == w for c in changes) for w in style}
    console.print(", ".join(f"{n} {w}" for w, n in counts.items()))
    if any(c.before is not None and c.before.kind == "file" for c in changes):
        console.print(
            f"a file as it was: tapstream files {t.group} {t.volume} --checkpoint "
            f"{t.checkpoint} get PATH --out FILE"
        )

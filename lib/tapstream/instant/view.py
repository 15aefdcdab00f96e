"""Open and close a checkpoint view of one replica volume.

Opening reads the replica's position and starts a preserve session there, under the replica's lock
(journal.restore.window); then the journal's events between that position and the checkpoint are
fetched from Kafka once, in offset order, and applied to an empty sparse delta file. Its cost grows
with the journal window, never with the disk. Nothing of the replica is copied.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from tapstream.core.replica import Replica
from tapstream.core.settings import TapstreamSettings
from tapstream.instant import preserve
from tapstream.instant.extents import Extents
from tapstream.instant.reader import ViewSpec

PLUGIN = Path(__file__).with_name("nbdkit_view.py")


async def open_view(
    settings: TapstreamSettings,
    group: str,
    volume: str,
    checkpoint: str,
    work: Path,
    owner: str,
) -> Path:
    """Open a view of `group/volume` at `checkpoint`; returns its spec file (in `work`). `owner`
    prefixes the preserve session's name, so `close_views(owner)` ends it even after a restart."""
    from tapstream.journal.restore import apply_from_kafka, window
    from tapstream.journal.store import JournalStore

    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    session: list[Path] = []

    def start_session(replica: Replica) -> None:
        session.append(preserve.create(replica.image, f"{owner}-{uuid.uuid4().hex[:12]}"))

    store = JournalStore(settings.recovery_database_url.get_secret_value())
    await store.start()
    try:
        w = await window(store, settings, group, volume, checkpoint, start_session)
        size = int(w.checkpoint["volume_size"])
        delta = work / f"{volume}.delta"
        with open(delta, "wb") as f:  # noqa: ASYNC230 - creates an empty sparse file
            f.truncate(size)
        await asyncio.to_thread(
            apply_from_kafka, settings, w.topic, w.spans, delta, size, None, durable=False
        )
        covered = Extents()
        for r in w.rows:
            if r["len"] > 0:
                covered.fill(r["off"], r["off"] + r["len"], r["off"])
        spec = ViewSpec(
            size=size,
            base=str(Replica(settings.replica_dir, group, volume).image),
            delta=str(delta),
            journal=list(zip(covered.starts, covered.ends, strict=True)),
            session=str(session[0]),
            checkpoint=str(w.checkpoint["id"]),
        )
        path = work / f"{volume}.view.json"
        spec.save(path)
        return path
    except BaseException:
        if session:
            close_session(settings, group, volume, session[0])
        raise
    finally:
        await store.stop()


def close_session(settings: TapstreamSettings, group: str, volume: str, path: Path) -> None:
    with Replica(settings.replica_dir, group, volume).lock():
        preserve.remove(path)


def close_views(settings: TapstreamSettings, group: str, owner: str) -> list[str]:
    """End every preserve session of `group` whose name starts with `owner`; returns their names."""
    ended = []
    base = settings.replica_dir / group
    for views in sorted(base.glob("*.views")) if base.is_dir() else []:
        volume = views.name.removesuffix(".views")
        for path in sorted(views.glob(f"{owner}-*")):
            close_session(settings, group, volume, path)
            ended.append(path.name)
    return ended


def files_owner_pid(name: str) -> int | None:
    """The process a `tapstream files` session belongs to (files-<pid>-...), else None."""
    parts = name.split("-")
    if len(parts) >= 3 and parts[0] == "files" and parts[1].isdigit():
        return int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_files_views(
    settings: TapstreamSettings, group: str, alive: Callable[[int], bool] = _alive
) -> list[str]:
    """End the preserve sessions of `tapstream files` processes that are gone (killed before they
    could close them): a session left open makes the VDSA keep every overwritten extent forever."""
    ended = []
    base = settings.replica_dir / group
    for views in sorted(base.glob("*.views")) if base.is_dir() else []:
        volume = views.name.removesuffix(".views")
        for path in sorted(views.glob("files-*")):
            pid = files_owner_pid(path.name)
            if pid is not None and pid != os.getpid() and not alive(pid):
                close_session(settings, group, volume, path)
                ended.append(path.name)
    return ended


def nbdkit_argv(spec: Path, host: str, port: int) -> list[str]:
    """nbdkit serving the view read-only, in the foreground (the supervisor owns the process)."""
    return [
        "nbdkit",
        "-f",
        "-r",
        "-t",
        "8",
        "-i",
        host,
        "-p",
        str(port),
        "python",
        str(PLUGIN),
        f"spec={spec}",
    ]

"""Small files that must survive a host crash whole: write a temp file, fsync it, rename it over
the old one, fsync the directory (without the last step the rename itself may be lost)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (the directory entry, not just the file)."""
    dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` by `data`: readers see the old content or the new one, never a mix. On an
    error (e.g. ENOSPC) the old content stays and the temp file is removed; the error is raised.
    `mode` (e.g. 0o600 for secrets) is set on the temp file before any byte is written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if mode is not None:
            tmp.unlink(missing_ok=True)  # a leftover temp file keeps its own, maybe wider, mode
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            os.chmod(tmp, mode)  # exactly `mode`, whatever the umask
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk (ENOSPC) most often: the old content stays, and no half-written temp file
        # is left to hold on to the space that is short.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(
    path: Path, obj: Any, *, mode: int | None = None, indent: int | None = None
) -> None:
    """`atomic_write` of `obj` as JSON: compact, or indented for people with a final newline."""
    text = json.dumps(obj) if indent is None else json.dumps(obj, indent=indent) + "\n"
    atomic_write(path, text, mode)

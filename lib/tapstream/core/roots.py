"""Whether a path lies under allowed roots: what the site manager and the tapper check before they
serve, copy or overwrite the file a volume names.

A path is accepted when it is absolute, has no `..` component, and its real path (every symlink
followed, the last one included) lies strictly inside the real path of one of the roots (a root may
itself be a symlink). Pure: no I/O but resolving the paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


class OutsideRoots(ValueError):
    """The path is not under any allowed root; the message names the roots and the setting."""


def real(path: Path | str) -> Path:
    """`path` with every symlink followed (missing parts kept as written)."""
    return Path(os.path.realpath(path))


def under_roots(path: str, roots: Sequence[Path], what: str, setting: str) -> Path:
    """The real path of `path` if it lies inside one of `roots`; OutsideRoots naming the roots and
    the setting (TAPSTREAM_<setting>) that lists them otherwise. `what` names the path."""
    real_roots = [real(r) for r in roots]
    listed = ", ".join(str(r) for r in real_roots) or "(none)"
    refuse = (
        f"{what} {path!r} {{why}}; this site accepts it only under {listed} "
        f"(TAPSTREAM_{setting}, a JSON list)"
    )
    if not path or "\0" in path:
        raise OutsideRoots(refuse.format(why="is empty or holds a NUL byte"))
    if not os.path.isabs(path):
        raise OutsideRoots(refuse.format(why="is relative: give an absolute path"))
    if ".." in PurePosixPath(path).parts:
        raise OutsideRoots(refuse.format(why="holds '..'"))
    try:
        resolved = real(path)
    except (ValueError, OSError) as exc:  # a name the filesystem cannot encode
        raise OutsideRoots(refuse.format(why=f"cannot be resolved ({exc})")) from None
    for root in real_roots:
        if resolved != root and resolved.is_relative_to(root):
            return resolved
    shown = "" if str(resolved) == path else f" (it resolves to {resolved})"
    raise OutsideRoots(refuse.format(why=f"is outside the allowed roots{shown}"))

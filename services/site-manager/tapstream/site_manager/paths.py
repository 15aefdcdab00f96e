"""Where a volume may live: a volume's `path` and `target_path` must resolve under a site's roots.

The tapper serves the file a volume names over NBD and copies it into Kafka, and a failover writes
the promoted volume into its target path, so an unchecked path would let whoever adds a volume read
or overwrite any file of the host. A path is accepted when it is absolute, has no `..` component,
and its real path (every symlink followed, the last one included) lies strictly inside the real
path of one of the roots (a root may itself be a symlink). Pure: no I/O but resolving the paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tapstream.site_manager.domain import Invalid

LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")
TAPSTREAM_VOLUMES = Path("/var/lib/tapstream/volumes")


def default_roots(state_dir: Path) -> list[Path]:
    """Where volumes live when no roots are configured: libvirt's and tapstream's image
    directories and the site manager's own `volumes/` (where promoted volumes go by default)."""
    return [LIBVIRT_IMAGES, TAPSTREAM_VOLUMES, state_dir / "volumes"]


def real(path: Path | str) -> Path:
    """`path` with every symlink followed (missing parts kept as written)."""
    return Path(os.path.realpath(path))


def under_roots(path: str, roots: Sequence[Path], what: str, setting: str) -> Path:
    """The real path of `path` if it lies inside one of `roots`; Invalid naming the roots and the
    setting that lists them otherwise. `what` says which path it is ("volume path", ...)."""
    real_roots = [real(r) for r in roots]
    listed = ", ".join(str(r) for r in real_roots) or "(none)"
    refuse = (
        f"{what} {path!r} {{why}}; this site accepts it only under {listed} "
        f"(TAPSTREAM_{setting}, a JSON list)"
    )
    if not path or "\0" in path:
        raise Invalid(refuse.format(why="is empty or holds a NUL byte"))
    if not os.path.isabs(path):
        raise Invalid(refuse.format(why="is relative: give an absolute path"))
    if ".." in PurePosixPath(path).parts:
        raise Invalid(refuse.format(why="holds '..'"))
    try:
        resolved = real(path)
    except (ValueError, OSError) as exc:  # a name the filesystem cannot encode
        raise Invalid(refuse.format(why=f"cannot be resolved ({exc})")) from None
    for root in real_roots:
        if resolved != root and resolved.is_relative_to(root):
            return resolved
    shown = "" if str(resolved) == path else f" (it resolves to {resolved})"
    raise Invalid(refuse.format(why=f"is outside the allowed roots{shown}"))


def volume_path(path: str, roots: Sequence[Path]) -> Path:
    """A volume's disk image at the protected site (served and copied by its tapper)."""
    return under_roots(path, roots, "volume path", "SITE_MANAGER_VOLUME_ROOTS")


def target_path(path: str, roots: Sequence[Path]) -> Path:
    """Where the recovery site promotes a volume (written by a failover or move)."""
    return under_roots(path, roots, "target path", "SITE_MANAGER_TARGET_ROOTS")

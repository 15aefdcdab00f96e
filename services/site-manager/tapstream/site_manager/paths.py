"""Where a volume may live: a volume's `path` and `target_path` must resolve under a site's roots.

The tapper serves the file a volume names over NBD and copies it into Kafka, and a failover writes
the promoted volume into its target path, so an unchecked path would let whoever adds a volume read
or overwrite any file of the host. The rule (absolute, no `..`, real path strictly inside a root's
real path) is `core.roots`; here a refusal is the domain's Invalid (REST: 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tapstream.core import roots as r
from tapstream.site_manager.domain import Invalid

LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")
TAPSTREAM_VOLUMES = Path("/var/lib/tapstream/volumes")


def default_roots(state_dir: Path) -> list[Path]:
    """Where volumes live when no roots are configured: libvirt's and tapstream's image
    directories and the site manager's own `volumes/` (where promoted volumes go by default)."""
    return [LIBVIRT_IMAGES, TAPSTREAM_VOLUMES, state_dir / "volumes"]


def under_roots(path: str, roots: Sequence[Path], what: str, setting: str) -> Path:
    """The real path of `path` if it lies inside one of `roots`; Invalid naming the roots and the
    setting that lists them otherwise."""
    try:
        return r.under_roots(path, roots, what, setting)
    except r.OutsideRoots as exc:
        raise Invalid(str(exc)) from None


def volume_path(path: str, roots: Sequence[Path]) -> Path:
    """A volume's disk image at the protected site (served and copied by its tapper)."""
    return under_roots(path, roots, "volume path", "SITE_MANAGER_VOLUME_ROOTS")


def target_path(path: str, roots: Sequence[Path]) -> Path:
    """Where the recovery site promotes a volume (written by a failover or move)."""
    return under_roots(path, roots, "target path", "SITE_MANAGER_TARGET_ROOTS")

"""Which services a site runs for a protection group in each state (pure; the reconciler acts on it).

Roles: `tapper` (serves the volumes, publishes writes), `checkpoints` (the VDSA's checkpoint
coordinator), `journal` and `apply` (index and apply the mirrored stream: the replica side), and
`reverse` (apply the other site's writes to the original volumes, after a failover or move).
"""

from __future__ import annotations

from tapstream.site_manager.domain import aggregates as a

TAPPER, CHECKPOINTS, JOURNAL, APPLY, REVERSE = (
    "tapper",
    "checkpoints",
    "journal",
    "apply",
    "reverse",
)


def desired_roles(g: a.ProtectionGroup, site: str) -> frozenset[str] | None:
    """The roles `site` runs for `g`; None while a failover/failback changes them step by step."""
    if g.status in (a.FAILING_OVER, a.FAILING_BACK):
        return None
    if g.version == 0 or g.status == a.DELETED or not g.volumes():
        return frozenset()
    roles: set[str] = set()
    if site == g.active_site and g.status in (
        a.PROTECTING,
        a.PAUSED,
        a.FAILED_OVER,
        a.REVERSE_PROTECTING,
    ):
        roles.add(TAPPER)
        if g.status != a.PAUSED:
            roles.add(CHECKPOINTS)
    if site == g.target_site and g.status in (a.PROTECTING, a.PAUSED):
        roles |= {JOURNAL, APPLY}
    if site == g.source_site and g.status == a.REVERSE_PROTECTING:
        roles.add(REVERSE)
    return frozenset(roles)

"""Replicator settings: TAPSTREAM_REPLICATOR_* plus the shared TAPSTREAM_* ones."""

from __future__ import annotations

from pydantic import Field

from tapstream.core.settings import TapstreamSettings


class ReplicatorSettings(TapstreamSettings):
    replicator_groups: list[str] = Field(
        default_factory=list, description='Protection groups, JSON list: ["g1"].'
    )
    replicator_interval_s: float = Field(
        1.0, gt=0, description="How often lag and RPO are measured."
    )
    replicator_supervise_local: bool = Field(
        False,
        description="Restart the local stack's dedicated MirrorMaker 2 when it dies (`make up` stack).",
    )
    replicator_restart_backoff_s: float = Field(
        5.0, gt=0, description="First wait before restarting MM2; doubles up to 2 min."
    )
    replicator_internal_replication_factor: int = Field(
        1,
        ge=1,
        description="Replication factor of MM2's internal topics in generated configs (3 in production).",
    )

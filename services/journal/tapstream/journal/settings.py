"""Journal settings: TAPSTREAM_JOURNAL_* plus the shared TAPSTREAM_* ones (the journal runs at the
recovery site: TAPSTREAM_SITE=recovery)."""

from __future__ import annotations

from pydantic import Field

from tapstream.core.settings import Site, TapstreamSettings


class JournalSettings(TapstreamSettings):
    site: Site = Field(
        "recovery", description="The journal indexes the mirrored stream at the recovery site."
    )
    journal_groups: list[str] = Field(
        default_factory=list, description='Protection groups, JSON list: ["g1"].'
    )
    journal_rebuild: bool = Field(
        False,
        description="At start, drop the groups' index and rebuild it from the topic's beginning.",
    )
    journal_batch_max: int = Field(
        2000, ge=1, description="Most events indexed per COPY transaction."
    )
    journal_share_partitions: bool = Field(
        False,
        description="Share the groups' partitions with the other journal processes that set it, "
        "through the Kafka consumer group tapstream-journal-index (offsets stay in Postgres, "
        "each partition written by one process at a time); off: this process reads every "
        "partition (run one journal process).",
    )

"""VDSA settings: TAPSTREAM_VDSA_* (plus the shared TAPSTREAM_* ones, e.g. TAPSTREAM_SITE)."""

from __future__ import annotations

from pydantic import Field

from tapstream.core.settings import TapstreamSettings


class VdsaSettings(TapstreamSettings):
    vdsa_groups: list[str] = Field(
        default_factory=list, description='Protection groups, JSON list: ["g1"].'
    )
    vdsa_checkpoint_interval_s: float = Field(
        5.0, ge=0, description="Automatic checkpoints (protected site); 0 = off."
    )
    vdsa_prepare_timeout_s: float = Field(
        2.0, gt=0, description="How long to wait for every tapper to hold."
    )
    vdsa_announce_window_s: float = Field(
        6.0, gt=0, description="A tapper is live if it announced this recently."
    )
    vdsa_journal_history_s: float = Field(
        3600.0,
        ge=0,
        description="Recovery site: writes younger than this stay in the journal only.",
    )
    vdsa_progress_interval_s: float = Field(
        2.0, gt=0, description="How often Progress records are published."
    )
    vdsa_auto_resync: bool = Field(
        True,
        description="Recovery site: when a volume halts, ask its tapper for a sync of the whole "
        "volume (RESYNC on the protected site's tapstream.control).",
    )
    vdsa_resync_retry_s: float = Field(
        300.0, gt=0, description="Ask again this often while a volume stays halted."
    )
    vdsa_retry_io_s: float = Field(
        5.0,
        gt=0,
        description="After an I/O error on a replica (e.g. a full disk), retry this late.",
    )

"""Analyzer settings: TAPSTREAM_ANALYZER_* (plus the shared TAPSTREAM_* ones)."""

from __future__ import annotations

from pydantic import Field

from tapstream.core.settings import TapstreamSettings


class AnalyzerSettings(TapstreamSettings):
    analyzer_group: str = Field(
        "g1",
        description="Protection group whose write topic (tapstream.writes.<group>) is analysed.",
    )
    analyzer_app_id: str | None = Field(
        None,
        description="faust app id = Kafka consumer group; default `<prefix>-analyzer.<name>.<group>`.",
    )
    analyzer_replication_factor: int = Field(
        1, ge=1, description="Replication of the analyzer's changelog topics (3 on a real cluster)."
    )
    analyzer_commit_interval_s: float = Field(
        1.0, gt=0, description="How often consumed offsets are committed."
    )
    analyzer_topic_wait_s: float = Field(
        0.0,
        ge=0,
        description="Wait this long for the write topic to appear (0: for ever); the tapper creates it.",
    )
    # Encryption detection (DESIGN §7). Defaults measured with `make eval-analyzer` (README).
    analyzer_high_sector_entropy: float = Field(
        7.2,
        gt=0,
        le=8,
        description="A 512-byte sector at or above this entropy (bits/byte) is high; random data measures 7.4-7.7, text 3.5-5.5.",
    )
    analyzer_incompressible_ratio: float = Field(
        0.98,
        gt=0,
        description="A fully high block counts only if zstd-1 keeps at least this share of it.",
    )
    analyzer_min_turned_sectors: int = Field(
        2,
        ge=1,
        le=8,
        description="Sectors of a block that must turn low -> high for the write to look encrypted.",
    )
    analyzer_window_s: float = Field(
        10.0, gt=0, description="Tumbling window per volume, on event time."
    )
    analyzer_min_blocks: int = Field(
        64, ge=1, description="Suspicious 4 KiB blocks in a window before an alert (64 = 256 KiB)."
    )
    analyzer_min_share: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of the window's data blocks that must look encrypted for an alert.",
    )
    analyzer_cooldown_windows: int = Field(
        3,
        ge=1,
        description="Quiet windows after an alert before the volume may alert again (no alert storms).",
    )
    analyzer_last_clean_tag: str = Field(
        "last-clean",
        description="Tag asked for (CHECKPOINT_TAG on tapstream.control) on the checkpoint an alert names.",
    )
    # Change rate.
    analyzer_change_window_s: float = Field(
        10.0, gt=0, description="Change-rate window per volume."
    )

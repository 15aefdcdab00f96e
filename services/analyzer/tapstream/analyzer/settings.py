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
    analyzer_uniform_chi2: float = Field(
        330.0,
        gt=0,
        description="A fully high block counts only if the chi-square of its byte histogram is "
        "below this (df 255: random bytes exceed 330 with p ~0.001; JPEG and some compressed "
        "blocks do).",
    )
    analyzer_encoded_gap_bits: float = Field(
        0.3,
        gt=0,
        description="A printable block within this many bits/byte of log2(its symbols) is a "
        "text-safe encoding of random data (base64, hex); text and source sit 1.3-1.8 below.",
    )
    analyzer_half_life_s: float = Field(
        60.0,
        gt=0,
        description="Half-life of a volume's evidence, on event time: slow encryption adds up over "
        "minutes, a burst of benign writes fades.",
    )
    analyzer_min_blocks: float = Field(
        64.0,
        gt=0,
        description="Decayed evidence, in suspicious 4 KiB blocks, before an alert (64 = 256 KiB).",
    )
    analyzer_min_share: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Share of the recent data blocks (decayed alike) that must look encrypted "
        "(a file's metadata updates come with every encrypted block: 0.25-0.6 on the evaluation's "
        "attacks, <= 0.04 on its benign cases).",
    )
    analyzer_fresh_weight: float = Field(
        0.5,
        ge=0,
        description="Evidence of one ciphertext-like block written into free (zero or never "
        "seen) space outside a container's run: encrypted copies of files.",
    )
    analyzer_run_idle_s: float = Field(
        30.0,
        gt=0,
        description="A container's run (the blocks after its header) ends when it is not "
        "continued for this long.",
    )
    analyzer_last_clean_tag: str = Field(
        "last-clean",
        description="Tag asked for (CHECKPOINT_TAG on tapstream.control) on the checkpoint an alert names.",
    )
    # Change rate.
    analyzer_change_window_s: float = Field(
        10.0, gt=0, description="Change-rate window per volume."
    )

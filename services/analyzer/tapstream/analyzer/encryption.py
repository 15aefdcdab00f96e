"""The built-in encryption (ransomware) detector, written with the SDK.

Each write is scored per 4 KiB block (scoring.py) against what the block held before (block
memory in the `blocks` table), weighed into the volume's decaying evidence (encryption_window.py),
and the first write that takes the score to 1.0 raises one Alert naming the last checkpoint before
the onset.
"""

from __future__ import annotations

from typing import ClassVar

from tapstream.analyzer import metrics
from tapstream.analyzer.block_memory import Region, region_key, region_of, zero_range
from tapstream.analyzer.encryption_window import Detection, VolumeWindow, WindowRules
from tapstream.analyzer.scoring import Thresholds, Verdict, judge, score_write
from tapstream.analyzer.sdk import AlertRequest, Analyzer, Checkpoint, Context, Event
from tapstream.analyzer.settings import AnalyzerSettings


class EncryptionAnalyzer(Analyzer):
    name: ClassVar[str] = "encryption"
    tables: ClassVar[tuple[str, ...]] = ("blocks",)

    def __init__(self, settings: AnalyzerSettings | None = None) -> None:
        s = settings or AnalyzerSettings()
        self.thresholds = Thresholds(
            s.analyzer_high_sector_entropy,
            s.analyzer_incompressible_ratio,
            s.analyzer_min_turned_sectors,
            s.analyzer_uniform_chi2,
            s.analyzer_encoded_gap_bits,
        )
        self.rules = WindowRules(
            s.analyzer_half_life_s,
            s.analyzer_min_blocks,
            s.analyzer_min_share,
            s.analyzer_fresh_weight,
            s.analyzer_run_idle_s,
        )
        self.tag = s.analyzer_last_clean_tag

    def _window(self, ctx: Context) -> VolumeWindow:
        raw = ctx.state.get("window")
        return VolumeWindow.from_dict(raw) if raw else VolumeWindow(ctx.volume)

    def on_write(self, ev: Event, ctx: Context) -> None:
        scores = score_write(ev.disk_offset, ev.data, self.thresholds)
        table = ctx.table("blocks")
        regions: dict[int, Region] = {}
        blocks: list[tuple[int, Verdict]] = []
        for sc in scores:
            r = region_of(sc.index)
            region = regions.get(r)
            if region is None:
                region = regions[r] = Region(table.get(region_key(ctx.volume, r)))
            prior, prior_mask = region.get(sc.index)
            v = judge(sc, prior, prior_mask, self.thresholds, region.encoded(sc.index))
            blocks.append((sc.index, v))
            if sc.zero:
                region.set_zero(sc.index)
            else:
                region.set_data(sc.index, sc.mask, sc.encoded)
        for r, region in regions.items():
            if region.dirty:
                table[region_key(ctx.volume, r)] = region.packed()
        window = self._window(ctx)
        detection = window.on_blocks(ev.seq, ev.ts, blocks, self.rules)
        ctx.state["window"] = window.to_dict()
        metrics.BLOCKS.labels(ctx.group, ctx.volume, "suspicious").inc(
            sum(1 for _, v in blocks if v == Verdict.SUSPICIOUS)
        )
        metrics.BLOCKS.labels(ctx.group, ctx.volume, "scored").inc(len(blocks))
        metrics.SHARE.labels(ctx.group, ctx.volume).set(window.share)
        metrics.SCORE.labels(ctx.group, ctx.volume).set(window.score)
        if detection is not None:
            ctx.alert(self._request(detection))

    def on_zero(self, ev: Event, ctx: Context) -> None:
        table = ctx.table("blocks")
        regions: dict[int, Region] = {}
        for b in zero_range(ev.disk_offset, ev.length):
            r = region_of(b)
            if r not in regions:
                regions[r] = Region(table.get(region_key(ctx.volume, r)))
            regions[r].set_zero(b)
        for r, region in regions.items():
            if region.dirty:
                table[region_key(ctx.volume, r)] = region.packed()
        self.on_other(ev, ctx)

    def on_checkpoint(self, ev: Event, ctx: Context) -> None:
        window = self._window(ctx)
        window.on_checkpoint(
            ev.seq, int(ev.body.get("ts") or ev.ts), ev.body["id"], ev.body.get("tag")
        )
        window.on_other(ev.seq, ev.ts, self.rules)
        ctx.state["window"] = window.to_dict()

    def on_other(self, ev: Event, ctx: Context) -> None:
        window = self._window(ctx)
        window.on_other(ev.seq, ev.ts, self.rules)
        ctx.state["window"] = window.to_dict()

    def _request(self, d: Detection) -> AlertRequest:
        cp = d.last_clean
        clean = Checkpoint(cp.seq, cp.ts, cp.id, cp.tag) if cp else None
        return AlertRequest(
            kind="encryption",
            volume=d.volume,
            severity="CRITICAL",
            message=(
                f"{d.volume} looks encrypted: {d.suspicious} blocks turned to ciphertext in place "
                f"and {d.fresh_high} ciphertext-like new blocks since the onset "
                f"({d.share:.0%} of the recent writes, score {d.score:.2f}); last clean checkpoint "
                f"{cp.id if cp else 'unknown (none seen before the onset)'}"
            ),
            onset_ts=d.onset_ts,
            detected_ts=d.detected_ts,
            score=d.score,
            encrypted_share=d.share,
            last_clean_checkpoint=clean,
            details={
                "onset_seq": str(d.onset_seq),
                "detected_seq": str(d.detected_seq),
                "suspicious_blocks": str(d.suspicious),
                "data_blocks": str(d.data_blocks),
                "fresh_high_blocks": str(d.fresh_high),
                "evidence": f"{d.evidence:.1f}",
                **(
                    {"last_clean_ts": str(cp.ts), "last_clean_tag": cp.tag or "", "tag": self.tag}
                    if cp
                    else {}
                ),
            },
            dedupe_key=f"{d.volume}:{d.onset_seq}",
            tag_checkpoint=cp is not None,
        )

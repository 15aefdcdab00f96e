"""The replicator's pure parts: RPO arithmetic and the Strimzi resources from the MM2 source."""

from tapstream.core.settings import TapstreamSettings
from tapstream.replicator.lag import rpo_seconds
from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties
from tapstream.replicator.strimzi import kafka_mirror_maker2


def test_rpo_is_the_age_of_the_oldest_unmirrored_write() -> None:
    assert rpo_seconds(100.0, None) == 0.0
    assert rpo_seconds(100.0, 98_500) == 1.5
    assert rpo_seconds(100.0, 101_000) == 0.0  # clock skew never gives a negative RPO


def test_strimzi_resources_follow_the_same_source_as_mm2_properties() -> None:
    s = TapstreamSettings()
    tuning = MirrorTuning(internal_replication_factor=3)
    props = mirrormaker_properties(s, tuning)
    to_recovery, to_protected = kafka_mirror_maker2(s, tuning)
    assert to_recovery["spec"]["connectCluster"] == "recovery"
    assert to_protected["spec"]["connectCluster"] == "protected"
    assert to_recovery["spec"]["mirrors"][0]["topicsPattern"] == props["protected->recovery.topics"]
    assert (
        to_protected["spec"]["mirrors"][0]["topicsPattern"] == props["recovery->protected.topics"]
    )
    src = to_recovery["spec"]["mirrors"][0]["sourceConnector"]["config"]
    assert src["replication.factor"] == 3 and src["offset-syncs.topic.replication.factor"] == 3
    target = next(c for c in to_recovery["spec"]["clusters"] if c["alias"] == "recovery")
    assert target["config"]["config.storage.replication.factor"] == 3

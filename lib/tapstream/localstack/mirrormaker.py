"""MirrorMaker 2's configuration is the replicator's (tapstream.replicator.mirrormaker); the local
stack's modules take it from there through this name."""

from tapstream.replicator.mirrormaker import (
    MirrorTuning,
    mirrormaker_properties,
    security_properties,
    topics_pattern,
)

__all__ = ["MirrorTuning", "mirrormaker_properties", "security_properties", "topics_pattern"]

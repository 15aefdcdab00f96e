"""Strimzi `KafkaMirrorMaker2` resources from the same source as the local mm2.properties (pure).

Strimzi runs one Connect cluster per resource, against the mirrors' target cluster, so the two
directions are two resources: protected -> recovery (every tapstream topic) and recovery ->
protected (the site managers' events only).
"""

from __future__ import annotations

from typing import Any

from tapstream.core.settings import TapstreamSettings
from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties

CONNECTOR_KEYS = {
    "source": (
        "replication.factor",
        "offset-syncs.topic.replication.factor",
        "refresh.topics.interval.seconds",
        "sync.topic.configs.interval.seconds",
        "sync.topic.acls.enabled",
        "replication.policy.class",
    ),
    "heartbeat": (
        "heartbeats.topic.replication.factor",
        "emit.heartbeats.interval.seconds",
        "replication.policy.class",
    ),
    "checkpoint": (
        "checkpoints.topic.replication.factor",
        "emit.checkpoints.interval.seconds",
        "sync.group.offsets.enabled",
        "refresh.groups.interval.seconds",
        "replication.policy.class",
    ),
}


def kafka_mirror_maker2(
    settings: TapstreamSettings,
    tuning: MirrorTuning | None = None,
    kafka_version: str = "4.1.1",
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    props = mirrormaker_properties(settings, tuning or MirrorTuning())
    p, r = settings.protected_alias, settings.recovery_alias
    clusters = {p: settings.protected_bootstrap, r: settings.recovery_bootstrap}
    resources = []
    for source, target in ((p, r), (r, p)):
        connect_config = {
            k: props[k]
            for k in (
                "config.storage.replication.factor",
                "offset.storage.replication.factor",
                "status.storage.replication.factor",
            )
        }
        mirror: dict[str, Any] = {
            "sourceCluster": source,
            "targetCluster": target,
            "topicsPattern": props[f"{source}->{target}.topics"],
            "groupsPattern": "tapstream-.*",
        }
        for connector, keys in CONNECTOR_KEYS.items():
            mirror[f"{connector}Connector"] = {
                **({"tasksMax": props["tasks.max"]} if connector == "source" else {}),
                "config": {k: props[k] for k in keys},
            }
        meta: dict[str, Any] = {
            "name": f"tapstream-{source}-to-{target}",
            "labels": {"app": "tapstream"},
        }
        if namespace:
            meta["namespace"] = namespace
        resources.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaMirrorMaker2",
                "metadata": meta,
                "spec": {
                    "version": kafka_version,
                    "replicas": 1,
                    "connectCluster": target,
                    "clusters": [
                        {
                            "alias": alias,
                            "bootstrapServers": clusters[alias],
                            **({"config": connect_config} if alias == target else {}),
                        }
                        for alias in (source, target)
                    ],
                    "mirrors": [mirror],
                },
            }
        )
    return resources

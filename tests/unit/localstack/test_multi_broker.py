"""The chaos stack's pure parts: a multi-node protected site, the link proxy in front of it, the
MirrorMaker 2 configuration pointed through it, and the default stack left exactly as it was."""

from pathlib import Path

from tapstream.core.settings import TapstreamSettings
from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.layout import overlapping, site_nodes
from tapstream.localstack.properties import broker_properties, initial_controllers
from tapstream.localstack.toxiproxy import ProxySpec
from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties

VOTERS = ((1, 29093), (2, 29103), (3, 29113))


def chaos_settings(tmp: Path, **kw: object) -> LocalStackSettings:
    return LocalStackSettings.model_validate(
        {"state_dir": tmp, "protected_kafka_port": 29092, "recovery_kafka_port": 29192,
         "protected_brokers": 3, "link_proxy": True, **kw}
    )  # fmt: skip


def test_one_node_keeps_the_historical_ports() -> None:
    [node] = site_nodes(19092, 1)
    assert (node.node_id, node.client, node.controller, node.link, node.proxy) == (
        1, 19092, 19093, None, None,
    )  # fmt: skip


def test_three_nodes_with_proxies_use_distinct_ports_clear_of_the_recovery_site() -> None:
    nodes = site_nodes(29092, 3, link_proxy=True)
    assert [n.node_id for n in nodes] == [1, 2, 3]
    ports = [p for n in nodes for p in n.ports]
    assert len(ports) == len(set(ports)) == 12
    assert nodes[1].client == 29102 and nodes[1].link == 29104 and nodes[1].proxy == 29105
    assert not overlapping(nodes, site_nodes(29192, 1))
    assert overlapping(site_nodes(29092, 3), site_nodes(29112, 1)) == {29112, 29113}


def test_a_node_of_three_replicates_every_topic_three_times_and_never_elects_unclean() -> None:
    p = broker_properties(2, 29102, "/d", voters=VOTERS)
    assert p["node.id"] == 2
    assert p["controller.quorum.bootstrap.servers"] == (
        "127.0.0.1:29093,127.0.0.1:29103,127.0.0.1:29113"
    )
    rfs = {k: v for k, v in p.items() if k.endswith("replication.factor")}
    assert len(rfs) >= 4 and set(rfs.values()) == {3}
    isr = {k: v for k, v in p.items() if k.endswith("min.isr") or k == "min.insync.replicas"}
    assert len(isr) == 3 and set(isr.values()) == {2}
    assert p["unclean.leader.election.enable"] is False
    # a dead broker is fenced well within the tapper's 15 s publish timeout
    assert int(p["broker.session.timeout.ms"]) <= 10_000


def test_the_single_node_broker_is_unchanged() -> None:
    p = broker_properties(1, 19092, "/d")
    assert "unclean.leader.election.enable" not in p and "broker.session.timeout.ms" not in p
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["advertised.listeners"] == p["listeners"]
    assert p["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"


def test_the_mm2_listener_advertises_the_proxy_in_front_of_it() -> None:
    p = broker_properties(1, 29092, "/d", voters=VOTERS, link=(29094, 29095))
    assert "MM2://127.0.0.1:29094" in str(p["listeners"])
    assert "MM2://127.0.0.1:29095" in str(p["advertised.listeners"])
    assert "MM2://127.0.0.1:29094" not in str(p["advertised.listeners"])
    assert "MM2:PLAINTEXT" in str(p["listener.security.protocol.map"])
    assert p["inter.broker.listener.name"] == "PLAINTEXT"  # brokers never go through the proxy


def test_initial_controllers_names_each_voter_with_its_directory() -> None:
    assert initial_controllers([(1, 29093, "AAAA"), (2, 29103, "BBBB")]) == (
        "1@127.0.0.1:29093:AAAA,2@127.0.0.1:29103:BBBB"
    )


def test_mirrormaker_reaches_the_protected_cluster_through_the_proxies() -> None:
    s = TapstreamSettings(protected_bootstrap="p:1", recovery_bootstrap="r:1")
    default = mirrormaker_properties(s)
    assert default["protected.bootstrap.servers"] == "p:1"
    assert not any("scheduled.rebalance" in k for k in default)
    p = mirrormaker_properties(
        s,
        MirrorTuning(internal_replication_factor=-1, protected_via="x:1,x:2", rebalance_delay_ms=0),
    )
    assert p["protected.bootstrap.servers"] == "x:1,x:2"
    assert p["recovery.bootstrap.servers"] == "r:1"
    assert p["protected.scheduled.rebalance.max.delay.ms"] == 0
    assert p["recovery.scheduled.rebalance.max.delay.ms"] == 0
    assert {v for k, v in p.items() if k.endswith("replication.factor")} == {-1}


def test_default_stack_is_one_broker_per_site_without_proxy(tmp_path: Path) -> None:
    s = Stack(LocalStackSettings(state_dir=tmp_path))
    assert [len(nodes) for nodes in s.brokers.values()] == [1, 1]
    assert s.bootstrap("protected") == "127.0.0.1:19092"
    assert s.kafka["protected"].pid_file == tmp_path.resolve() / "kafka-protected.pid"
    assert s.kafka["protected"].home == tmp_path.resolve() / "kafka" / "protected"
    assert s.toxiproxy is None and s.link_proxies() == []
    assert s.mirror_tuning() == MirrorTuning()
    assert [c.name for c in s.status()] == [
        "kafka-protected", "kafka-recovery", "mirrormaker", "postgres-protected",
        "postgres-recovery",
    ]  # fmt: skip


def test_chaos_stack_has_three_protected_brokers_each_behind_its_proxy(tmp_path: Path) -> None:
    s = Stack(chaos_settings(tmp_path))
    nodes = s.brokers["protected"]
    assert [n.name for n in nodes] == ["protected-1", "protected-2", "protected-3"]
    assert all(n.voters == ((1, 29093), (2, 29103), (3, 29113)) for n in nodes)
    assert s.bootstrap("protected") == "127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112"
    assert s.bootstrap("recovery") == "127.0.0.1:29192"
    assert s.link_proxies() == [
        ProxySpec("protected-1", 29095, 29094),
        ProxySpec("protected-2", 29105, 29104),
        ProxySpec("protected-3", 29115, 29114),
    ]
    tuning = s.mirror_tuning()
    assert tuning.protected_via == "127.0.0.1:29095,127.0.0.1:29105,127.0.0.1:29115"
    assert tuning.internal_replication_factor == -1 and tuning.rebalance_delay_ms == 0
    # services talk to the brokers directly; only MirrorMaker 2 crosses the link
    assert s.env()["TAPSTREAM_PROTECTED_BOOTSTRAP"] == s.bootstrap("protected")
    assert "toxiproxy" in [c.name for c in s.status()]


def test_proxy_spec_is_toxiproxys_json() -> None:
    assert ProxySpec("p1", 29095, 29094).as_json() == {
        "name": "p1", "listen": "127.0.0.1:29095", "upstream": "127.0.0.1:29094", "enabled": True,
    }  # fmt: skip

"""The generated Kafka and MirrorMaker 2 configurations (pure, no processes)."""

from tapstream.localstack.properties import broker_properties, mirrormaker_properties, render


def test_broker_is_a_single_combined_kraft_node_with_rf_1() -> None:
    p = broker_properties(1, 19092, "/data")
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert all(v == 1 for k, v in p.items() if k.endswith("replication.factor"))
    assert p["auto.create.topics.enable"] is False


def test_mirrormaker_directions_and_loop_free_policy() -> None:
    p = mirrormaker_properties("p:1", "r:1")
    assert p["protected->recovery.topics"] == r"tapstream\..*"
    assert p["recovery->protected.topics"] == r"tapstream\.events"
    assert p["replication.policy.class"].endswith("DefaultReplicationPolicy")
    internal = [k for k in p if k.endswith("replication.factor")]
    assert len(internal) >= 7 and all(p[k] == 1 for k in internal)
    assert int(p["refresh.topics.interval.seconds"]) <= 5


def test_render_is_java_properties() -> None:
    assert render({"a.b": True, "c": 1}) == "a.b=true\nc=1\n"

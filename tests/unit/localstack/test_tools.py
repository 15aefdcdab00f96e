"""Kafka's CLI tools get the site's bootstrap servers the way each tool expects them (pure)."""

from tapstream.localstack.stack import TOOLS, with_bootstrap

B = "127.0.0.1:19192"


def test_bootstrap_server_is_prepended_unless_given() -> None:
    t = TOOLS["kafka-topics"]
    assert with_bootstrap(t, ["--list"], B) == ["--bootstrap-server", B, "--list"]
    given = ["--bootstrap-server", "x:1", "--list"]
    assert with_bootstrap(t, given, B) == given
    assert with_bootstrap(t, ["--bootstrap-server=x:1"], B) == ["--bootstrap-server=x:1"]


def test_producer_perf_test_takes_bootstrap_as_a_producer_prop() -> None:
    t = TOOLS["kafka-producer-perf-test"]
    assert with_bootstrap(t, ["--topic", "x"], B) == [
        "--topic", "x", "--producer-props", f"bootstrap.servers={B}"]  # fmt: skip
    assert with_bootstrap(t, ["--producer-props", "acks=1", "--topic", "x"], B) == [
        "--producer-props", f"bootstrap.servers={B}", "acks=1", "--topic", "x"]  # fmt: skip


def test_offline_tools_get_no_bootstrap() -> None:
    assert with_bootstrap(TOOLS["kafka-dump-log"], ["--files", "a.log"], B) == ["--files", "a.log"]

"""The generated broker and log4j2 configurations, and the .properties writer (pure, no processes)."""

from tapstream.localstack.properties import broker_properties, log4j2_config, render


def parse_java_properties(text: str) -> dict[str, str]:
    """Enough of java.util.Properties.load to check what Java will read back: `\\x` -> `x`."""
    out = {}
    for line in text.splitlines():
        if not line or line[0] in "#!":
            continue
        key, value, i, esc = [], [], 0, False
        target = key
        while i < len(line):
            ch = line[i]
            if esc:
                target.append({"n": "\n", "t": "\t"}.get(ch, ch))
                esc = False
            elif ch == "\\":
                esc = True
            elif target is key and ch in "=:":
                target = value
            else:
                target.append(ch)
            i += 1
        out["".join(key).strip()] = "".join(value).lstrip()
    return out


def test_broker_is_a_single_combined_kraft_node_with_rf_1() -> None:
    p = broker_properties(1, 19092, "/data")
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "PLAINTEXT://127.0.0.1:19092" in str(p["listeners"])
    assert "CONTROLLER://127.0.0.1:19093" in str(p["listeners"])
    rfs = {k: v for k, v in p.items() if k.endswith("replication.factor")}
    assert len(rfs) >= 4 and set(rfs.values()) == {1}
    assert p["auto.create.topics.enable"] is False
    # a shared disk: every partition is capped, in segments small enough to free space early
    assert 0 < int(p["log.segment.bytes"]) < int(p["log.retention.bytes"]) <= 4 * 1024**3


def test_render_is_java_properties() -> None:
    assert render({"a.b": True, "c": 1}) == "a.b=true\nc=1\n"


def test_render_keeps_regex_backslashes_through_java_parsing() -> None:
    # java.util.Properties drops lone backslashes: `tapstream\..*` must be written `tapstream\\..*`.
    props = {"protected->recovery.topics": r"tapstream\..*", "odd key=x": "a\\b"}
    assert parse_java_properties(render(props)) == props


def test_log4j2_writes_to_the_named_file_and_silences_mm2_noise() -> None:
    conf = log4j2_config("/logs/kafka-protected.log")
    assert "appender.file.fileName = /logs/kafka-protected.log" in conf
    assert "org.apache.kafka.connect.mirror.Scheduler" in conf
    assert "Could not alter configuration of topic" in conf

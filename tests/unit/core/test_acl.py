"""The ACL table against the code: every topic and consumer group a module names is granted to the
principals that run that module, and the issue's findings hold (recovery VDSA reads the mirrored
control topic, site managers reach both clusters, analyzers cannot write control)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tapstream.core.acl import CLUSTERS, Principal, table
from tapstream.core.settings import TapstreamSettings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = TapstreamSettings(_env_file=None)  # type: ignore[call-arg]
TABLE = table(SETTINGS)
MANAGERS = {"site-manager-protected", "site-manager-recovery"}

# Which principals run the code of each module (or of one function, `path::function`): the most
# specific key wins. A module that names a topic or group and is missing here fails the test.
RUN_BY: dict[str, set[str]] = {
    "lib/tapstream/core/dlq.py": {"journal", "vdsa-recovery", "analyzer"} | MANAGERS,
    "lib/tapstream/core/replay.py": MANAGERS,
    "lib/tapstream/core/tag_follower.py": {"journal", "vdsa-recovery"},
    "services/tapper/": {"tapper"},
    "services/vdsa/tapstream/vdsa/coordinator.py": {"vdsa-protected", "cli"} | MANAGERS,
    "services/vdsa/tapstream/vdsa/service.py": {"vdsa-recovery"},
    "services/vdsa/tapstream/vdsa/apply.py": {"vdsa-recovery"},
    "services/vdsa/tapstream/vdsa/halts.py": {"vdsa-recovery"},
    "services/vdsa/tapstream/vdsa/holds.py": {"vdsa-recovery"},
    "services/vdsa/tapstream/vdsa/holds.py::send_tag": {"cli"},
    "services/vdsa/tapstream/vdsa/reverse.py": MANAGERS,  # reverse protection, at the original site
    "services/journal/tapstream/journal/indexer.py": {"journal"},
    "services/journal/tapstream/journal/restore.py": {"cli", "vdsa-recovery"} | MANAGERS,
    "services/replicator/": {"replicator"},
    "services/analyzer/tapstream/analyzer/runtime.py": {"analyzer"},
    "services/analyzer/tapstream/analyzer/published.py": {"cli"},
    "services/site-manager/tapstream/site_manager/": MANAGERS,
    "cli/tapstream/cli/": {"cli"},
}
SCANNED = ["lib/tapstream/core", "services", "cli"]

# Uses the table refuses on purpose, still in the code: they fail at a secured broker. Each entry
# names why; the test fails once the code no longer does it, so the entry cannot outlive the use.
REFUSED: dict[tuple[str, str, str], str] = {
    ("analyzer", "tapstream.control", "Write"): (
        "an analyzer's CHECKPOINT_TAG after an alert: user code must not command tappers and "
        "VDSAs (issue 11); refused, it is counted and logged (runtime.ask_to_keep), the alert "
        "names the checkpoint; to keep it automatically, the site manager has to tag it"
    ),
    ("analyzer", "tapstream.control", "Create"): "ensure_topics creates control only if missing",
}

PRODUCE_CALLS = {"produce", "produce_nowait"}
# Calls that read a topic named in any argument (consumers, offsets, faust agents).
READ_CALLS = {
    "make_consumer",
    "Consumer",
    "TopicPartition",
    "subscribe",
    "assign",
    "partitions_now",
    "wait_for_partitions",
    "read_stream",
    "read_topic",
    "last_seq",
    "measure",
    "agent",
    "committed_lag",
    "partial",
}


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    function: str
    resource: str  # topic | group
    names: tuple[str, ...]  # candidates (an unknown MirrorMaker 2 source gives two)
    operation: str


def _sample(node: ast.expr) -> str | None:
    """A str constant as is; an f-string with each placeholder as 'x'; anything else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
    return None


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    return None


class Scan:
    def __init__(self, path: Path) -> None:
        self.rel = str(path.relative_to(ROOT))
        self.tree = ast.parse(path.read_text())
        self.parent: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node
        self.assigned: dict[str, list[ast.expr]] = {}
        self.mentions: dict[str, list[ast.expr]] = {}  # by last name part: unparse() is slow
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                self.assigned.setdefault(ast.unparse(node.targets[0]), []).append(node.value)
            if isinstance(node, ast.Name):
                self.mentions.setdefault(node.id, []).append(node)
            elif isinstance(node, ast.Attribute):
                self.mentions.setdefault(node.attr, []).append(node)

    def function(self, node: ast.AST) -> str:
        while node in self.parent:
            node = self.parent[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                outer = self.function(node)
                return outer or node.name
        return ""

    def topics(self, node: ast.expr) -> tuple[str, ...]:
        """The topic names `node` evaluates to: settings.topic(...), settings.mirrored(...)."""
        if isinstance(node, ast.Name | ast.Attribute):
            return tuple(
                n for v in self.assigned.get(ast.unparse(node), []) for n in self.topics(v)
            )
        name = _call_name(node)
        assert isinstance(node, ast.Call) or name is None
        if name == "topic" and isinstance(node, ast.Call) and len(node.args) == 1:
            sample = _sample(node.args[0])
            return (SETTINGS.topic(sample),) if sample is not None else ()
        if name == "mirrored" and isinstance(node, ast.Call) and node.args:
            inner = self.topics(node.args[0])
            source = next((k.value for k in node.keywords if k.arg == "source"), None)
            if source is None:
                sources = ["protected"]
            elif isinstance(source, ast.Constant):
                sources = [source.value]
            else:
                sources = list(CLUSTERS)  # decided at run time
            return tuple(SETTINGS.mirrored(t, source=s) for t in inner for s in sources)
        return ()

    def operations(self, node: ast.expr) -> set[str]:
        """What the code does with the topic: Write (produce, faust send), Create (TopicSpec), Read."""
        carriers = [node]
        up = self.parent.get(node)
        if _call_name(up) == "topic" and up is not None:  # faust: app.topic(settings.topic(...))
            carriers.append(up)  # type: ignore[arg-type]
        ops: set[str] = set()
        named: list[str] = []
        for c in carriers:
            holder = self.parent.get(c)
            if isinstance(holder, ast.Assign) and len(holder.targets) == 1:
                named.append(ast.unparse(holder.targets[0]))
            ops |= self._direct(c)
        for name in named:
            last = name.rpartition(".")[2]
            for other in self.mentions.get(last, []):
                if ast.unparse(other) != name:
                    continue
                holder = self.parent.get(other)
                if isinstance(holder, ast.Assign) and other in holder.targets:
                    continue
                if isinstance(holder, ast.Attribute) and holder.attr == "send":
                    ops.add("Write")
                else:
                    ops |= self._direct(other)
        return ops or {"Describe"}

    def _direct(self, node: ast.AST) -> set[str]:
        call = self.parent.get(node)
        while isinstance(call, ast.keyword | ast.Tuple | ast.List | ast.Starred):
            call = self.parent.get(call)
        if isinstance(call, ast.Call) and call.args and call.args[0] is node:
            if _call_name(call) in PRODUCE_CALLS:
                return {"Write"}
            if _call_name(call) == "TopicSpec":
                return {"Create"}
        if isinstance(call, ast.Call) and _call_name(call) in READ_CALLS:
            return {"Read"}
        return set()

    def uses(self) -> list[Use]:
        out: list[Use] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and _call_name(node) in ("topic", "mirrored"):
                if (
                    self.parent.get(node) is not None
                    and _call_name(self.parent[node]) == "mirrored"
                ):
                    continue  # counted as the mirrored name
                names = self.topics(node)
                if names:
                    for op in sorted(self.operations(node)):
                        fn = self.function(node)
                        out.append(Use(self.rel, node.lineno, fn, "topic", names, op))
            group: ast.expr | None = None
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "group.id":
                        group = v
            elif isinstance(node, ast.keyword) and node.arg == "group_id":
                group = node.value
            if group is not None and (sample := _sample(group)) is not None:
                line = getattr(group, "lineno", 0)
                out.append(Use(self.rel, line, self.function(node), "group", (sample,), "Read"))
        return out


def run_by(use: Use) -> set[str] | None:
    keys = [f"{use.path}::{use.function}", use.path]
    for key in keys:
        if key in RUN_BY:
            return RUN_BY[key]
    best = max(
        (k for k in RUN_BY if "::" not in k and use.path.startswith(k)), key=len, default=None
    )
    return RUN_BY[best] if best else None


def all_uses() -> list[Use]:
    files = [
        p
        for d in SCANNED
        for p in (ROOT / d).rglob("*.py")
        if "/tests/" not in str(p) and p != ROOT / "lib/tapstream/core/acl.py"
    ]
    # Only files that can name a topic or a group are parsed (the scan is the slow part).
    files = [p for p in files if any(w in p.read_text() for w in (".topic(", "group"))]
    return [u for f in sorted(files) for u in Scan(f).uses()]


USES = all_uses()


def allowed(p: Principal, use: Use) -> bool:
    return any(
        p.allows(c, use.resource, n, use.operation)  # type: ignore[arg-type]
        for c in CLUSTERS
        for n in use.names
    )


def test_the_scan_sees_the_code() -> None:
    """The scan finds the uses it is meant to (else an empty scan would pass everything)."""
    seen = {(u.path.split("/")[-1], u.names[0], u.operation) for u in USES}
    assert ("halts.py", "tapstream.control", "Write") in seen
    assert ("tag_follower.py", "protected.tapstream.control", "Read") in seen
    assert ("event_log.py", "tapstream.events", "Write") in seen
    assert ("event_log.py", "tapstream.events", "Create") in seen
    assert ("runtime.py", "tapstream.control", "Write") in seen  # faust: control.send
    assert ("publish.py", "tapstream-tapper-seq-x", "Read") in seen
    assert ("apply.py", "tapstream-vdsa-apply", "Read") in seen
    assert len({u.path for u in USES}) >= 15


def test_every_module_naming_a_topic_has_its_principals() -> None:
    missing = sorted({u.path for u in USES if run_by(u) is None})
    assert missing == [], f"add these modules to RUN_BY (who runs them): {missing}"


def test_every_topic_and_group_the_code_uses_is_granted() -> None:
    problems, refused = [], set()
    for use in USES:
        for service in sorted(run_by(use) or ()):
            if allowed(TABLE[service], use):
                continue
            key = (service, use.names[0], use.operation)
            if key in REFUSED:
                refused.add(key)
                continue
            problems.append(
                f"{use.path}:{use.line} ({use.function or 'module'}): {service} may not "
                f"{use.operation} {use.resource} {' or '.join(use.names)}"
            )
    assert problems == []
    assert refused == set(REFUSED), "a refused use is gone from the code: drop it from REFUSED"


def test_a_use_outside_the_table_is_caught(tmp_path: Path) -> None:
    code = tmp_path / "x.py"
    code.write_text(
        "async def f(settings, p):\n"
        "    await p.produce(settings.topic('events'), b'', key=b'g')\n"
        "    c = Consumer({'group.id': 'tapstream-elsewhere'})\n"
    )
    scan = Scan.__new__(Scan)
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        scan.__init__(code)  # type: ignore[misc]
    finally:
        ROOT = old
    uses = scan.uses()
    analyzer = TABLE["analyzer"]
    assert sorted((u.names, u.operation) for u in uses if not allowed(analyzer, u)) == [
        (("tapstream-elsewhere",), "Read"),
        (("tapstream.events",), "Write"),
    ]


# --- the findings ---------------------------------------------------------------------


def test_recovery_vdsa_reads_the_mirrored_control_topic() -> None:
    vdsa = TABLE["vdsa-recovery"]
    assert vdsa.allows("recovery", "topic", "protected.tapstream.control", "Read")
    assert vdsa.allows("protected", "topic", "tapstream.control", "Write")  # RESYNC of a halt
    assert not vdsa.allows("protected", "topic", "tapstream.writes.g1", "Read")


def test_site_managers_reach_both_clusters() -> None:
    for site in CLUSTERS:
        sm = TABLE[f"site-manager-{site}"]
        assert sm.crosses_sites
        for cluster in CLUSTERS:
            assert sm.allows(cluster, "topic", "tapstream.control", "Write")  # move, failback
            assert sm.allows(cluster, "topic", "tapstream.writes.g1", "Read")
        # Each writes only its own site's event log.
        assert sm.allows(site, "topic", "tapstream.events", "Write")
        far = "recovery" if site == "protected" else "protected"
        assert not sm.allows(far, "topic", "tapstream.events", "Write")
        assert sm.allows(site, "topic", f"{far}.tapstream.events", "Read")


def test_analyzers_cannot_command() -> None:
    analyzer = TABLE["analyzer"]
    for cluster in CLUSTERS:
        assert not analyzer.allows(cluster, "topic", "tapstream.control", "Write")
        assert not analyzer.allows(cluster, "topic", "tapstream.writes.g1", "Write")
    assert analyzer.allows("protected", "topic", "tapstream.alerts", "Write")
    assert analyzer.allows("protected", "group", "tapstream-analyzer.encryption.g1", "Read")
    assert analyzer.allows(
        "protected", "topic", "tapstream-analyzer.encryption.g1-volumes-changelog", "Create"
    )


def test_no_wildcards_and_users_are_unique() -> None:
    users = [p.user for p in TABLE.values()]
    assert len(users) == len(set(users))
    for p in TABLE.values():
        for grants in p.grants.values():
            for g in grants:
                assert g.resource == "cluster" or g.name not in ("", "*"), (p.service, g)


@pytest.mark.parametrize("prefix", ["ts2"])
def test_names_follow_the_settings(prefix: str) -> None:
    s = TapstreamSettings(_env_file=None, topic_prefix=prefix, protected_alias="dc1")  # type: ignore[call-arg]
    vdsa = table(s)["vdsa-recovery"]
    assert vdsa.allows("recovery", "topic", f"dc1.{prefix}.control", "Read")
    assert not vdsa.allows("recovery", "topic", "protected.tapstream.control", "Read")


def test_who_needs_one_password_on_both_clusters() -> None:
    crossing = {p.service for p in TABLE.values() if p.crosses_sites}
    assert crossing == {"vdsa-recovery", "replicator", "mirrormaker2", "cli"} | MANAGERS
    # The others run at either site, each against its own site's cluster only.
    assert {p.service for p in TABLE.values() if not p.crosses_sites} == {
        "tapper",
        "vdsa-protected",
        "journal",
        "analyzer",
    }

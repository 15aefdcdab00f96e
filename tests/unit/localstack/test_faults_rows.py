"""The fault results file: rows merged by scenario, printed as a table."""

import json
from pathlib import Path

from tapstream.localstack import faults


def test_a_scenario_replaces_its_previous_row_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "results" / "faults.json"
    faults.record({"scenario": "b", "lost": 1}, path)
    faults.record({"scenario": "a", "lost": 0}, path)
    faults.record({"scenario": "b", "lost": 0, "rpo_max_s": 40.5}, path)
    rows = json.loads(path.read_text())
    assert [(r["scenario"], r["lost"]) for r in rows] == [("a", 0), ("b", 0)]
    assert rows[1]["rpo_max_s"] == 40.5 and "at" in rows[1]
    assert list(tmp_path.joinpath("results").iterdir()) == [path]  # no temporary left behind


def test_table_has_a_line_per_row_and_dashes_for_missing_values() -> None:
    text = faults.table([{"scenario": "link-cut", "lost": 0, "rpo_max_s": 40.56}])
    header, rule, row = text.splitlines()
    assert header.split()[:2] == ["scenario", "fault"] and set(rule.replace(" ", "")) == {"-"}
    assert row.startswith("link-cut") and "40.56" in row and " - " in row


def test_a_missing_file_is_no_rows(tmp_path: Path) -> None:
    assert faults.load(tmp_path / "none.json") == []

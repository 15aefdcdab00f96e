"""The fault-scenario results file (`bench/results/faults.json`): a JSON list of rows, one per
scenario, merged by scenario name so each run of a scenario replaces its previous row.

`python -m tapstream.localstack.faults [FILE]` prints the table (what `make chaos` shows).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tapstream.core.durable import atomic_write_json

DEFAULT = Path("bench/results/faults.json")
# Column order of the table; a row may hold more keys (they are kept in the file, not printed).
COLUMNS = ("scenario", "fault", "load", "acked", "lost", "halted", "recover_s", "rpo_max_s",
           "lag_max", "stall_max_s")  # fmt: skip


def load(path: Path = DEFAULT) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return rows if isinstance(rows, list) else []


def merge(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    """`rows` with `row` in place of the one of the same scenario (appended if new). Pure."""
    out = [r for r in rows if r.get("scenario") != row["scenario"]]
    out.append(row)
    return sorted(out, key=lambda r: str(r.get("scenario")))


def record(row: dict[str, Any], path: Path | None = None) -> None:
    """Merge `row` (it must name its `scenario`) into the file, stamped with the time; written by
    rename so a concurrent reader never sees half a file. The file: `path`, else
    TAPSTREAM_FAULTS_FILE (`make test` points it under the state dir, so a test run leaves the
    committed results of `make chaos` alone), else bench/results/faults.json."""
    path = path or Path(os.environ.get("TAPSTREAM_FAULTS_FILE") or DEFAULT)
    row = {**row, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, merge(load(path), row), indent=2)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows (missing values as '-')."""
    cells = [list(COLUMNS)] + [[_cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    file = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    rows = load(file)
    print(table(rows) if rows else f"no fault results in {file} yet")

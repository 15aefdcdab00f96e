"""The schema files: found from the repo and from a wheel, and written by our conventions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapstream.core.codec.schemas import NAMESPACE, RECORDS, current, schema_dir


def test_schemas_are_found_in_the_repo() -> None:
    assert schema_dir() == Path(__file__).resolve().parents[3] / "schemas"


def test_schemas_are_found_in_a_wheel_layout(tmp_path: Path) -> None:
    # pyproject maps schemas/ to tapstream/_schemas in the wheel.
    module = tmp_path / "site-packages" / "tapstream" / "core" / "codec" / "schemas.py"
    module.parent.mkdir(parents=True)
    module.touch()
    bundled = tmp_path / "site-packages" / "tapstream" / "_schemas"
    bundled.mkdir()
    (bundled / "DiskEvent.avsc").write_text("{}")
    assert schema_dir(module) == bundled


def test_missing_schemas_say_what_to_do(tmp_path: Path) -> None:
    module = tmp_path / "a" / "tapstream" / "core" / "codec" / "schemas.py"
    module.parent.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="make setup"):
        schema_dir(module)


def fields(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (dotted path, field) of a schema, union branches included."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, list):
        for branch in node:
            out += fields(branch, path)
    elif isinstance(node, dict) and node.get("type") == "record":
        for f in node["fields"]:
            out.append((f"{path}{node['name']}.{f['name']}", f))
            out += fields(f["type"], path)
    return out


@pytest.mark.parametrize("name", RECORDS)
def test_conventions(name: str) -> None:
    raw = json.loads((schema_dir() / f"{name}.avsc").read_text())
    assert raw["namespace"] == NAMESPACE and raw["name"] == name
    for path, f in fields(raw):
        # Every timestamp is timestamp-micros, so tools show it as a time.
        if f["name"] == "ts" or f["name"].endswith("_ts"):
            assert f["type"] == {"type": "long", "logicalType": "timestamp-micros"}, path
    assert current()[name].raw == raw


def test_history_files_are_named_for_a_record_and_version() -> None:
    for path in (schema_dir() / "history").glob("*.avsc"):
        name, version, _ = path.name.split(".")
        assert name in RECORDS and version[0] == "v" and version[1:].isdigit(), path.name
        assert json.loads(path.read_text())["name"] == name

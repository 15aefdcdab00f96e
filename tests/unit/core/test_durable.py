from pathlib import Path

from tapstream.core.durable import atomic_write, atomic_write_json


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "kept.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new"
    assert [x.name for x in tmp_path.iterdir()] == ["kept.json"]


def test_a_mode_is_set_before_the_content_lands(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")
    target.chmod(0o644)
    (tmp_path / "secret.json.tmp").write_text("left over by a crash")
    atomic_write(target, "new", mode=0o600)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_json_is_compact_by_default_and_indented_with_a_newline_for_people(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    atomic_write_json(p, {"a": [1, 2]})
    assert p.read_text() == '{"a": [1, 2]}'
    atomic_write_json(p, {"a": 1}, indent=2, mode=0o600)
    assert p.read_text() == '{\n  "a": 1\n}\n'
    assert p.stat().st_mode & 0o777 == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["state.json"]

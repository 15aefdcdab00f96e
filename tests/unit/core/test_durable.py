from pathlib import Path

from tapstream.core.durable import atomic_write


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "kept.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new"
    assert [x.name for x in tmp_path.iterdir()] == ["kept.json"]

"""The local schema registry's plumbing, without starting it: where it is, when `status` lists it,
what `env` adds, and when its build (or kcat's) is redone."""

from __future__ import annotations

from pathlib import Path

from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.kcat import SOURCE as KCAT_SOURCE
from tapstream.localstack.registry import SOURCE, source_digest


def _stack(tmp_path: Path, **kw: object) -> Stack:
    return Stack(LocalStackSettings(state_dir=tmp_path, registry_port=28181, **kw))


def test_the_registry_is_listed_when_asked_for_or_running(tmp_path: Path) -> None:
    assert "registry" not in [c.name for c in _stack(tmp_path).status()]
    (row,) = [c for c in _stack(tmp_path, local_registry=True).status() if c.name == "registry"]
    assert (row.kind, row.port, row.up) == ("registry", 28181, False)


def test_env_names_the_registry_only_while_it_runs(tmp_path: Path) -> None:
    s = _stack(tmp_path, local_registry=True)
    assert s.registry.url == "http://127.0.0.1:28181/apis/ccompat/v7"
    assert s.registry_env() == {}  # not running: services keep the single-object encoding
    assert "TAPSTREAM_SCHEMA_REGISTRY_URL" not in s.env()  # local.env never switches encodings


def test_a_build_is_redone_when_any_of_its_files_changes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "pom.xml").write_text("<project/>")
    (src / "sub" / "A.java").write_text("class A {}")
    before = source_digest(src)
    assert source_digest(src) == before
    (src / "sub" / "A.java").write_text("class A { }")
    assert source_digest(src) != before


def test_the_build_sources_are_in_the_repository() -> None:
    assert (SOURCE / "pom.xml").is_file() and (SOURCE / "apicurio-3.0.9" / "pom.xml").is_file()
    assert (KCAT_SOURCE / "build.sh").is_file()
    assert (KCAT_SOURCE / "kcat-1.7.1" / "avro.c").is_file()

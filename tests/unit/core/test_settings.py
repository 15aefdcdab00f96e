"""Settings: TAPSTREAM_ variables, the local.env file by default, env beats file, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapstream.core.settings import SettingsError, TapstreamSettings, load


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("TAPSTREAM_ENV_FILE", "TAPSTREAM_PROTECTED_BOOTSTRAP", "TAPSTREAM_METRICS_PORT", "TAPSTREAM_SITE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_defaults_without_any_file(in_tmp: Path) -> None:
    s = load(TapstreamSettings)
    assert s.protected_bootstrap == "127.0.0.1:19092" and s.site == "protected"


def test_local_env_is_read_by_default(in_tmp: Path) -> None:
    (in_tmp / ".tapstream").mkdir()
    (in_tmp / ".tapstream" / "local.env").write_text("TAPSTREAM_PROTECTED_BOOTSTRAP=kafka-p:9092\nOTHER=1\n")
    assert load(TapstreamSettings).protected_bootstrap == "kafka-p:9092"


def test_environment_beats_the_file(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = in_tmp / "site.env"
    env_file.write_text("TAPSTREAM_PROTECTED_BOOTSTRAP=from-file:1\nTAPSTREAM_SITE=recovery\n")
    monkeypatch.setenv("TAPSTREAM_ENV_FILE", str(env_file))
    monkeypatch.setenv("TAPSTREAM_PROTECTED_BOOTSTRAP", "from-env:2")
    s = load(TapstreamSettings)
    assert s.protected_bootstrap == "from-env:2" and s.site == "recovery"


def test_bad_value_names_the_variable(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPSTREAM_METRICS_PORT", "abc")
    with pytest.raises(SettingsError, match="TAPSTREAM_METRICS_PORT"):
        load(TapstreamSettings)


def test_bad_choice_names_the_variable(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPSTREAM_SITE", "moon")
    with pytest.raises(SettingsError, match="TAPSTREAM_SITE"):
        load(TapstreamSettings)


def test_secrets_are_not_printed(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPSTREAM_RECOVERY_DATABASE_URL", "postgresql://u:hunter2@db/x")
    s = load(TapstreamSettings)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.model_copy(update={"site": "recovery"}).database_url.endswith("@db/x")


def test_topic_names() -> None:
    s = TapstreamSettings()
    assert s.topic("writes.g1") == "tapstream.writes.g1"
    assert s.mirrored("tapstream.writes.g1") == "protected.tapstream.writes.g1"

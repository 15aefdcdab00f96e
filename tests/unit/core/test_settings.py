"""Settings: TAPSTREAM_ variables, the local.env file by default, env beats file, bad values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import Field

from tapstream.core.settings import SettingsError, TapstreamSettings, load


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("TAPSTREAM_")]:  # a developer's own shell
        monkeypatch.delenv(var)
    return tmp_path


def test_defaults_without_any_file(in_tmp: Path) -> None:
    s = load(TapstreamSettings)
    assert s.protected_bootstrap == "127.0.0.1:19092" and s.site == "protected"


def test_local_env_is_read_by_default(in_tmp: Path) -> None:
    (in_tmp / ".tapstream").mkdir()
    (in_tmp / ".tapstream" / "local.env").write_text(
        "TAPSTREAM_PROTECTED_BOOTSTRAP=kafka-p:9092\nOTHER=1\n"
    )
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


def test_only_prefixed_variables_are_read(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTECTED_BOOTSTRAP", "unprefixed:1")
    assert load(TapstreamSettings).protected_bootstrap == "127.0.0.1:19092"
    monkeypatch.setenv("TAPSTREAM_PROTECTED_BOOTSTRAP", "prefixed:2")
    assert load(TapstreamSettings).protected_bootstrap == "prefixed:2"


def test_bad_value_in_the_file_names_the_variable(in_tmp: Path) -> None:
    (in_tmp / ".tapstream").mkdir()
    (in_tmp / ".tapstream" / "local.env").write_text("TAPSTREAM_METRICS_PORT=70000\n")
    with pytest.raises(SettingsError, match=r"TAPSTREAM_METRICS_PORT: .*65535"):
        load(TapstreamSettings)


def test_a_named_env_file_that_is_missing_is_an_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAPSTREAM_ENV_FILE", str(in_tmp / "nope.env"))
    with pytest.raises(SettingsError, match=r"TAPSTREAM_ENV_FILE: .*nope\.env"):
        load(TapstreamSettings)


def test_an_empty_env_file_variable_reads_no_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_tmp / ".tapstream").mkdir()
    (in_tmp / ".tapstream" / "local.env").write_text("TAPSTREAM_PROTECTED_BOOTSTRAP=kafka-p:9092\n")
    monkeypatch.setenv("TAPSTREAM_ENV_FILE", "")
    assert load(TapstreamSettings).protected_bootstrap == "127.0.0.1:19092"


class _ServiceSettings(TapstreamSettings):
    things_groups: list[str] = Field(default_factory=list, description="JSON list")
    things_limit: int | None = Field(None, description="optional")


def test_a_list_that_is_not_json_names_the_variable(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAPSTREAM_THINGS_GROUPS", "g1,g2")
    with pytest.raises(SettingsError, match="TAPSTREAM_THINGS_GROUPS: not valid JSON"):
        load(_ServiceSettings)
    monkeypatch.setenv("TAPSTREAM_THINGS_GROUPS", '["g1", "g2"]')
    assert load(_ServiceSettings).things_groups == ["g1", "g2"]


def test_errors_in_subclass_fields_name_the_variable_once(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAPSTREAM_THINGS_LIMIT", "many")
    monkeypatch.setenv("TAPSTREAM_THINGS_GROUPS", "[1, []]")
    with pytest.raises(SettingsError) as err:
        load(_ServiceSettings)
    message = str(err.value)
    assert "TAPSTREAM_THINGS_LIMIT: " in message and "'many'" in message
    assert "TAPSTREAM_THINGS_GROUPS at 1: " in message  # the list item, not a made-up variable


def test_registry_timeout_must_be_positive(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPSTREAM_SCHEMA_REGISTRY_TIMEOUT_S", "0")
    with pytest.raises(SettingsError, match="TAPSTREAM_SCHEMA_REGISTRY_TIMEOUT_S"):
        load(TapstreamSettings)

"""`python -m tapstream.analyzer run MODULE:CLASS`: how the class is built."""

from __future__ import annotations

import sys
import types

import pytest

from tapstream.analyzer.__main__ import load_analyzer
from tapstream.analyzer.examples.write_sizes import WriteSizes
from tapstream.analyzer.sdk import Analyzer
from tapstream.analyzer.settings import AnalyzerSettings


class TakesSettings(Analyzer):
    name = "takes-settings"

    def __init__(self, settings: AnalyzerSettings) -> None:
        super().__init__()
        self.settings = settings


class BrokenInit(Analyzer):
    name = "broken"

    def __init__(self, settings: AnalyzerSettings) -> None:
        raise TypeError("a bug inside the analyzer's constructor")


@pytest.fixture
def module() -> str:
    mod = types.ModuleType("my_analyzers")
    mod.TakesSettings = TakesSettings  # type: ignore[attr-defined]
    mod.BrokenInit = BrokenInit  # type: ignore[attr-defined]
    mod.NotOne = dict  # type: ignore[attr-defined]
    sys.modules["my_analyzers"] = mod
    yield "my_analyzers"
    del sys.modules["my_analyzers"]


def test_settings_passed_when_the_constructor_takes_them(module: str) -> None:
    s = AnalyzerSettings()
    built = load_analyzer(f"{module}:TakesSettings", s)
    assert isinstance(built, TakesSettings) and built.settings is s
    assert isinstance(
        load_analyzer("tapstream.analyzer.examples.write_sizes:WriteSizes", s), WriteSizes
    )


def test_an_error_inside_the_constructor_is_not_swallowed(module: str) -> None:
    with pytest.raises(TypeError, match="inside the analyzer"):
        load_analyzer(f"{module}:BrokenInit", AnalyzerSettings())


def test_not_an_analyzer_is_refused(module: str) -> None:
    with pytest.raises(SystemExit, match="not an Analyzer subclass"):
        load_analyzer(f"{module}:NotOne", AnalyzerSettings())

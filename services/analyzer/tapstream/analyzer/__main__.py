"""`python -m tapstream.analyzer [encryption|change-rate|run module:Class] [--group G]` (default: encryption
on TAPSTREAM_ANALYZER_GROUP)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable

from tapstream.analyzer.sdk import Analyzer
from tapstream.analyzer.settings import AnalyzerSettings
from tapstream.core.settings import SettingsError, load

BUILT_IN = {
    "encryption": "tapstream.analyzer.encryption:EncryptionAnalyzer",
    "change-rate": "tapstream.analyzer.change_rate_analyzer:ChangeRateAnalyzer",
}


def load_analyzer(ref: str, settings: AnalyzerSettings) -> Analyzer:
    """`module:Class` (or a built-in name) -> an instance; the class may take the settings."""
    ref = BUILT_IN.get(ref, ref)
    module, _, attr = ref.partition(":")
    if not attr:
        raise SystemExit(f"analyzer: {ref!r} is not module:Class")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Analyzer)):
        raise SystemExit(f"analyzer: {ref} is not an Analyzer subclass")
    # A subclass's constructor may or may not take the settings (Analyzer's own takes nothing);
    # asked of its signature, so a TypeError raised inside the constructor is not mistaken for it.
    make: Callable[..., Analyzer] = cls
    try:
        inspect.signature(cls).bind(settings)
    except TypeError:
        return make()
    return make(settings)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tapstream.analyzer", description=__doc__)
    p.add_argument(
        "analyzer",
        nargs="?",
        default="encryption",
        help="encryption (default), change-rate, or run",
    )
    p.add_argument("ref", nargs="?", help="module:Class (with run)")
    p.add_argument("--group", help="protection group (default TAPSTREAM_ANALYZER_GROUP)")
    args = p.parse_args(argv)
    try:
        settings = load(AnalyzerSettings, **({"analyzer_group": args.group} if args.group else {}))
    except SettingsError as exc:
        print(f"analyzer: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    ref = args.ref if args.analyzer == "run" else args.analyzer
    if not ref:
        p.error("run needs module:Class")
    from tapstream.analyzer.runtime import run

    run(load_analyzer(ref, settings), settings)


if __name__ == "__main__":
    main()

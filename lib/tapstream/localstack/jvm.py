"""How the stack starts Java: one command shape for brokers, MirrorMaker 2 and Kafka's CLI tools."""

from __future__ import annotations

import os
from pathlib import Path


def java_command(heap: str, log_conf: Path, classpath: str, main: str, *args: str) -> list[str]:
    """A small-footprint JVM: the heap starts small and grows to `heap`; short GC pauses."""
    return [
        "java",
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_conf}",
        "-cp",
        classpath,
        main,
        *args,
    ]


def java_env() -> dict[str, str]:
    """The caller's environment minus CLASSPATH (ours is explicit; a stray one would mix jars)."""
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    return env

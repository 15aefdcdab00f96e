"""Fetch Apache Kafka's jars with Maven (once) and return the Java classpath."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

POM = Path(__file__).resolve().parents[3] / "deploy" / "local" / "pom.xml"


class ClasspathError(RuntimeError):
    """Maven or Java is missing, or the jars could not be fetched."""


def resolve(state_dir: Path, maven_repo: Path, pom: Path = POM) -> str:
    """The classpath of the pom's jars; runs `mvn` only when the pom changed since the last run."""
    out = state_dir / "classpath.txt"
    stamp = state_dir / "classpath.sha256"
    digest = hashlib.sha256(pom.read_bytes() + str(maven_repo).encode()).hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text() == digest:
        cached = out.read_text().strip()
        # A cleared Maven cache leaves a classpath of missing jars: fetch again.
        if all(Path(jar).is_file() for jar in cached.split(":")):
            return cached
    for tool, pkg in (("mvn", "maven"), ("java", "openjdk-17-jre-headless")):
        if shutil.which(tool) is None:
            raise ClasspathError(
                f"`{tool}` is not on the PATH: install it (Debian: apt-get install {pkg}) and retry."
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        f"-Dmaven.repo.local={maven_repo}",
        "-f",
        str(pom),
        "dependency:build-classpath",
        f"-Dmdep.outputFile={out}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClasspathError(
            "mvn could not fetch the Kafka jars from Maven Central:\n"
            + (result.stdout + result.stderr)[-2000:]
        )
    stamp.write_text(digest)
    return out.read_text().strip()

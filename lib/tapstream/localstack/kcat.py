"""kcat with Avro / schema registry support, built from deploy/kcat/ (Debian's kcat lacks it).

`kcat -C -s value=avro -r <registry URL>` prints each value of a Confluent-format topic as JSON.
Built once with gcc against Debian's libraries into a per-content cache, like toxiproxy.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[3] / "deploy" / "kcat"
# Header -> Debian package that brings it (what deploy/local/install-system-deps.sh installs).
HEADERS = {
    "librdkafka/rdkafka.h": "librdkafka-dev",
    "yajl/yajl_gen.h": "libyajl-dev",
    "avro.h": "libavro-dev",
    "jansson.h": "libjansson-dev",
    "curl/curl.h": "libcurl4-openssl-dev",
}


class KcatError(RuntimeError):
    """A compiler or a library is missing, or the build failed."""


def binary(cache: Path, source: Path = SOURCE) -> Path:
    """The Avro-capable kcat, built on first use (seconds)."""
    h = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    out = cache / h.hexdigest()[:16]
    exe = out / "kcat"
    if exe.is_file():
        return exe
    missing = [pkg for header, pkg in HEADERS.items() if not _has_header(header)]
    if shutil.which("gcc") is None:
        missing.insert(0, "gcc")
    if missing:
        raise KcatError(
            f"building kcat with Avro needs: apt-get install {' '.join(missing)} "
            "(make system-deps installs them)"
        )
    res = subprocess.run(
        ["bash", str(source / "build.sh"), str(out)], capture_output=True, text=True
    )
    if res.returncode != 0 or not exe.is_file():
        raise KcatError(f"building kcat with Avro failed:\n{(res.stdout + res.stderr)[-3000:]}")
    return exe


def _has_header(name: str) -> bool:
    # Debian keeps some headers (libcurl's) in the multiarch folder, e.g. /usr/include/x86_64-linux-gnu.
    dirs = [
        Path("/usr/include"),
        Path("/usr/local/include"),
        *Path("/usr/include").glob("*-linux-*"),
    ]
    return any((d / name).is_file() for d in dirs)

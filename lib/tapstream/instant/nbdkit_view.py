"""nbdkit python plugin: a checkpoint view, read-only (`nbdkit -r python nbdkit_view.py spec=FILE`).

nbdkit speaks NBD (handshake, structured replies, many parallel connections) in C; Python only plans
each read and issues preads, which release the GIL, so the parallel thread model pays off.
"""

import sys
from pathlib import Path

import nbdkit  # provided by nbdkit's embedded Python

# nbdkit runs the system Python, not the project's venv: the reader needs only this package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tapstream.instant.reader import ViewReader, ViewSpec

API_VERSION = 2
_spec: ViewSpec | None = None


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def config(key: str, value: str) -> None:
    global _spec
    if key != "spec":
        raise RuntimeError(f"unknown parameter {key!r} (expected spec=FILE)")
    _spec = ViewSpec.load(Path(value))


def config_complete() -> None:
    if _spec is None:
        raise RuntimeError("spec=FILE is required")


def open(readonly: bool) -> ViewReader:  # nbdkit names this callback
    assert _spec is not None
    return ViewReader(_spec)


def close(h: ViewReader) -> None:
    h.close()


def get_size(h: ViewReader) -> int:
    return h.spec.size


def can_multi_conn(h: ViewReader) -> bool:
    return True  # read-only: every connection sees the same bytes


def pread(h: ViewReader, buf: bytearray, offset: int, flags: int) -> None:
    h.pread(memoryview(buf), offset)

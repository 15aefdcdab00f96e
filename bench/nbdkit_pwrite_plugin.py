"""A minimal nbdkit python plugin: the unprotected Python peer of the tapper benchmark.

Writes go straight to a file with os.pwrite (no publishing), reads with os.preadv; nothing else.
Run: nbdkit python bench/nbdkit_pwrite_plugin.py file=/path/to/disk.img
nbdkit runs this with the system python3 (python3-nbdkit), not the project's venv.
"""

import os

import nbdkit

API_VERSION = 2
path = None


def thread_model():
    # The fairest setting for a Python peer: requests in parallel, the GIL released in pwrite.
    return nbdkit.THREAD_MODEL_PARALLEL


def config(key, value):
    global path
    if key != "file":
        raise RuntimeError(f"unknown parameter {key!r} (only file=PATH)")
    path = value


def config_complete():
    if path is None:
        raise RuntimeError("file=PATH is required")


def open(readonly):
    return os.open(path, os.O_RDONLY if readonly else os.O_RDWR)


def close(fd):
    os.close(fd)


def get_size(fd):
    return os.fstat(fd).st_size


def pread(fd, buf, offset, flags):
    if os.preadv(fd, [buf], offset) != len(buf):
        raise OSError(5, "short read")


def pwrite(fd, buf, offset, flags):
    if os.pwrite(fd, buf, offset) != len(buf):
        raise OSError(5, "short write")


def flush(fd, flags):
    os.fdatasync(fd)

"""Names of groups and volumes: what may become a topic suffix or a file name.

A name that comes from a record is untrusted: the recovery VDSA builds replica paths from it, so it
must never hold a path separator or be `.`/`..`.
"""

from __future__ import annotations

import re

# Anchored, so JSON Schema / pydantic `pattern`s can use it as is; '..' is refused apart.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAME = re.compile(NAME_PATTERN)


class InvalidName(ValueError):
    """A group, VM or volume name that may not become a file name or a Kafka key."""


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None and ".." not in name


def check_name(kind: str, name: object) -> str:
    """`name` if valid, else InvalidName saying what a name may hold."""
    if not valid_name(name):
        raise InvalidName(
            f"{kind} name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, without '..' (it becomes a file name and a Kafka key)"
        )
    assert isinstance(name, str)
    return name

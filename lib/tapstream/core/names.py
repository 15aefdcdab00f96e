"""Names of groups and volumes: what may become a topic suffix or a file name.

A name that comes from a record is untrusted: the recovery VDSA builds replica paths from it, so it
must never hold a path separator or be `.`/`..`.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None and ".." not in name

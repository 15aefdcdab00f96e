"""The local stack's key for signed tapstream.control commands (core.control_auth).

Made once per state dir (`control-keys.json`, mode 0600) and written into local.env at every `up`, so
every service, test and `make demo` signs and verifies with it, and a restarted stack keeps it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tapstream.core.durable import atomic_write_json

FILE = "control-keys.json"


def control_key_env(root: Path) -> dict[str, str]:
    """TAPSTREAM_CONTROL_KEYS and TAPSTREAM_CONTROL_KEY_ID of the stack under `root`."""
    path = root / FILE
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        key_id = f"local-{secrets.token_hex(4)}"
        body = {"key_id": key_id, "keys": {key_id: secrets.token_urlsafe(32)}}
        atomic_write_json(path, body, mode=0o600)
    saved = json.loads(path.read_text())
    return {
        "TAPSTREAM_CONTROL_KEYS": json.dumps(saved["keys"], separators=(",", ":")),
        "TAPSTREAM_CONTROL_KEY_ID": saved["key_id"],
    }

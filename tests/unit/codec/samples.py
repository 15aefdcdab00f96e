"""One fixed record per schema (and per DiskEvent body): the golden files are their encodings.

golden/<case>.bin      single-object bytes of SAMPLES[case] (fingerprint + Avro body)
golden/schemas.json    digest of each schema without its docs: defaults and field order count,
                       though they are not part of the fingerprint
golden/v1/             bytes written by older versions; never regenerated

Regenerate ONLY for a deliberate, compatible schema change (after copying the old .avsc into
schemas/history/, see schemas/README.md):
    .venv/bin/python -m tests.unit.codec.samples
"""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
HEADER = {
    "volume": "vm1-disk0",
    "seq": 42,
    "ts": 1_764_000_000_123_456,
    "host": "hv1",
    "group": "pg1",
}
SAMPLES: dict[str, tuple[str, dict]] = {
    "DiskEvent-Write": (
        "DiskEvent",
        {
            **HEADER,
            "body": (
                "Write",
                {
                    "offset": 4096,
                    "length": 4,
                    "data": b"\x00\x01\xfe\xff",
                    "checksum": 3_000_000_001,
                },
            ),
        },
    ),
    "DiskEvent-Zero": (
        "DiskEvent",
        {**HEADER, "body": ("Zero", {"offset": 0, "length": 1 << 20, "trim": True})},
    ),
    "DiskEvent-Flush": ("DiskEvent", {**HEADER, "body": ("Flush", {"fua": False})}),
    "DiskEvent-Checkpoint": (
        "DiskEvent",
        {
            **HEADER,
            "body": (
                "Checkpoint",
                {
                    "id": "cp-1",
                    "ts": 1_764_000_000_000_000,
                    "tag": "before-upgrade",
                    "volumes": ["vm1-disk0", "vm2-disk0"],
                    "volume_size": 1 << 30,
                },
            ),
        },
    ),
    "DiskEvent-SyncStart": (
        "DiskEvent",
        {
            **HEADER,
            "body": (
                "SyncStart",
                {"sync_id": "s1", "kind": "DELTA", "volume_size": 1 << 30, "bytes_total": 65536},
            ),
        },
    ),
    "DiskEvent-SyncBlock": (
        "DiskEvent",
        {
            **HEADER,
            "body": (
                "SyncBlock",
                {"sync_id": "s1", "offset": 65536, "length": 2, "data": b"ok", "checksum": 1},
            ),
        },
    ),
    "DiskEvent-SyncEnd": (
        "DiskEvent",
        {**HEADER, "body": ("SyncEnd", {"sync_id": "s1", "blocks": 1, "bytes": 2})},
    ),
    "Command": (
        "Command",
        {
            "id": "c1",
            "group": "pg1",
            "kind": "CHECKPOINT_PREPARE",
            "sender": "vdsa",
            "ts": 1,
            "checkpoint_id": "cp-1",
            "tag": None,
            "volumes": ["a"],
            "args": {"k": "v"},
            "key_id": "site-2026",
            "signature": "5f" * 32,
        },
    ),
    "DomainEvent": (
        "DomainEvent",
        {
            "id": "e1",
            "aggregate_type": "ProtectionGroup",
            "aggregate_id": "pg1",
            "version": 1,
            "type": "GroupCreated",
            "ts": 2,
            "site": "protected",
            "payload_json": '{"name": "pg1"}',
            "meta": {},
            "actor": "alice",
        },
    ),
    "Alert": (
        "Alert",
        {
            "id": "a1",
            "kind": "encryption",
            "group": "pg1",
            "volume": "vm1-disk0",
            "onset_ts": 3,
            "detected_ts": 4,
            "severity": "CRITICAL",
            "score": 0.97,
            "encrypted_share": 0.8,
            "last_clean_checkpoint": "cp-1",
            "message": "encryption",
            "details": {},
        },
    ),
    "Progress": (
        "Progress",
        {
            "group": "pg1",
            "volume": "vm1-disk0",
            "site": "recovery",
            "source": "vdsa",
            "applied_seq": 40,
            "applied_ts": 5,
            "applied_offset": 39,
            "newest_seq_seen": 42,
            "rpo_seconds": 1.5,
            "lag_records": 2,
            "ts": 6,
            "halted": "gap: expected seq 41, got 45",
        },
    ),
}


def schema_digests() -> dict[str, str]:
    """sha256 of each current schema with its `doc` strings removed (docs may change freely)."""
    import hashlib
    import json

    from tapstream.core.codec.schemas import current

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "doc"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return {
        n: hashlib.sha256(json.dumps(strip(s.raw), sort_keys=True).encode()).hexdigest()
        for n, s in current().items()
    }


def main() -> None:
    import json

    from tapstream.core.codec import make_codec
    from tapstream.core.settings import TapstreamSettings

    codec = make_codec(TapstreamSettings())
    GOLDEN.mkdir(exist_ok=True)
    for key, (name, record) in SAMPLES.items():
        (GOLDEN / f"{key}.bin").write_bytes(codec.encode(name, record))
        print(f"wrote golden/{key}.bin")
    (GOLDEN / "schemas.json").write_text(
        json.dumps(schema_digests(), indent=2, sort_keys=True) + "\n"
    )
    print("wrote golden/schemas.json")


if __name__ == "__main__":
    main()

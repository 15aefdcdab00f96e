"""Hypothesis strategies for every tapstream record, straight from the Avro field types."""

from __future__ import annotations

from hypothesis import strategies as st

longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
text = st.text(max_size=20)
micros = st.integers(min_value=0, max_value=2**62)
opt_text = st.none() | text
string_list = st.lists(text, max_size=4)
string_map = st.dictionaries(text, text, max_size=3)
blobs = st.binary(max_size=256)

write = st.fixed_dictionaries({"offset": longs, "length": ints, "data": blobs, "checksum": longs})
BODIES = {
    "Write": write,
    "Zero": st.fixed_dictionaries({"offset": longs, "length": longs, "trim": st.booleans()}),
    "Flush": st.fixed_dictionaries({"fua": st.booleans()}),
    "Checkpoint": st.fixed_dictionaries(
        {"id": text, "ts": micros, "tag": opt_text, "volumes": string_list, "volume_size": longs}
    ),
    "SyncStart": st.fixed_dictionaries(
        {
            "sync_id": text,
            "kind": st.sampled_from(["INITIAL", "DELTA"]),
            "volume_size": longs,
            "bytes_total": longs,
        }
    ),
    "SyncBlock": st.fixed_dictionaries(
        {"sync_id": text, "offset": longs, "length": ints, "data": blobs, "checksum": longs}
    ),
    "SyncEnd": st.fixed_dictionaries({"sync_id": text, "blocks": longs, "bytes": longs}),
}


def disk_event_with(branch: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "volume": text,
            "seq": longs,
            "ts": micros,
            "host": text,
            "group": text,
            "body": st.tuples(st.just(branch), BODIES[branch]),
        }
    )


disk_event = st.one_of(*(disk_event_with(b) for b in BODIES))
command = st.fixed_dictionaries(
    {
        "id": text,
        "group": text,
        "kind": st.sampled_from(
            [
                "CHECKPOINT_PREPARE",
                "CHECKPOINT_PREPARED",
                "CHECKPOINT_COMMIT",
                "CHECKPOINT_ABORT",
                "PAUSE",
                "RESUME",
                "RESYNC",
                "START_PROTECTION",
                "STOP_PROTECTION",
                "ANNOUNCE",
            ]
        ),
        "sender": text,
        "ts": micros,
        "checkpoint_id": opt_text,
        "tag": opt_text,
        "volumes": string_list,
        "args": string_map,
        "key_id": opt_text,
        "signature": opt_text,
    }
)
domain_event = st.fixed_dictionaries(
    {
        "id": text,
        "aggregate_type": text,
        "aggregate_id": text,
        "version": longs,
        "type": text,
        "ts": micros,
        "site": text,
        "payload_json": text,
        "meta": string_map,
        "actor": st.none() | text,
    }
)
floats = st.floats(allow_nan=False)
alert = st.fixed_dictionaries(
    {
        "id": text,
        "kind": text,
        "group": text,
        "volume": text,
        "onset_ts": micros,
        "detected_ts": micros,
        "severity": st.sampled_from(["INFO", "WARNING", "CRITICAL"]),
        "score": floats,
        "encrypted_share": floats,
        "last_clean_checkpoint": opt_text,
        "message": text,
        "details": string_map,
    }
)
progress = st.fixed_dictionaries(
    {
        "group": text,
        "volume": text,
        "site": text,
        "source": text,
        "applied_seq": longs,
        "applied_ts": micros,
        "applied_offset": longs,
        "newest_seq_seen": longs,
        "rpo_seconds": floats,
        "lag_records": longs,
        "ts": micros,
        "halted": st.none() | text,
    }
)

BY_NAME = {
    "DiskEvent": disk_event,
    "Command": command,
    "DomainEvent": domain_event,
    "Alert": alert,
    "Progress": progress,
}

# One case per record type and per DiskEvent body branch, so that none is left to chance.
CASES: dict[str, tuple[str, st.SearchStrategy[dict]]] = {
    **{f"DiskEvent-{b}": ("DiskEvent", disk_event_with(b)) for b in BODIES},
    **{n: (n, strategy) for n, strategy in BY_NAME.items() if n != "DiskEvent"},
}

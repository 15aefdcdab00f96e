"""Tapper settings (TAPSTREAM_TAPPER_* plus the shared TAPSTREAM_* ones)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tapstream.core.settings import TapstreamSettings

Mode = Literal["sync", "async"]


class VolumeSpec(BaseModel):
    """One exported volume: NBD export `name`, backed by `path`, protected in `group`."""

    name: str
    path: Path
    group: str
    mode: Mode = "sync"


class TapperSettings(TapstreamSettings):
    """Every field is TAPSTREAM_<FIELD>, e.g. tapper_volumes <- TAPSTREAM_TAPPER_VOLUMES."""

    tapper_volumes: list[VolumeSpec] = Field(
        default_factory=list,
        description='JSON list of volumes, e.g. [{"name":"vm1","path":"/v/vm1.img","group":"g1","mode":"sync"}].',
    )
    tapper_listen_host: str = Field("127.0.0.1", description="TCP address of the NBD server; empty for none.")
    tapper_listen_port: int = Field(10809, ge=0, le=65535, description="TCP port (10809 is NBD's); 0 picks one.")
    tapper_unix_socket: Path | None = Field(None, description="Also serve NBD on this Unix socket.")
    tapper_host_id: str = Field(default_factory=socket.gethostname, description="Host name put in every event.")
    tapper_state_dir: Path = Field(Path(".tapstream/tapper"), description="Dirty bitmaps and other local state.")
    tapper_chunk_bytes: int = Field(1024 * 1024, ge=4096, le=8 * 1024 * 1024,
                             description="Largest Write event; larger NBD writes are split.")
    tapper_publish_timeout_s: float = Field(15.0, gt=0, description="Sync mode: a write Kafka has not acked by then fails with EIO.")
    tapper_hold_timeout_s: float = Field(2.0, gt=0, description="Longest a checkpoint may hold completions.")
    tapper_bitmap_granule: int = Field(64 * 1024, ge=4096, description="Bytes per dirty-bitmap bit (async mode).")
    tapper_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "lz4", description="Producer compression of the write stream.")
    tapper_linger_ms: float = Field(1.0, ge=0, description="Producer batching delay.")
    tapper_retention_hours: int = Field(168, ge=1, description="Retention of new write topics (≥ journal history + margin).")
    tapper_partitions: int = Field(0, ge=0, description="Partitions of new write topics; 0 = one per volume of the group.")
    tapper_announce_interval_s: float = Field(2.0, gt=0, description="How often the tapper announces its volumes on tapstream.control.")

    @field_validator("tapper_volumes")
    @classmethod
    def _unique_names(cls, v: list[VolumeSpec]) -> list[VolumeSpec]:
        names = [s.name for s in v]
        if len(names) != len(set(names)):
            raise ValueError("volume names must be unique")
        return v

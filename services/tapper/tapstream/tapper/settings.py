"""Tapper settings (TAPSTREAM_TAPPER_* plus the shared TAPSTREAM_* ones).

Volumes come from TAPSTREAM_TAPPER_VOLUMES, in either form:
  JSON:    [{"name": "vm1", "path": "/v/vm1.img", "group": "g1", "mode": "sync"}, ...]
  compact: vm1=/v/vm1.img:g1:sync,vm2=/v/vm2.img:g1        (mode defaults to sync)
Until the site manager drives the tapper over tapstream.control, this is where a volume's protection
group and mode are decided. `tapstream tapper create-volume PATH --size 1G` creates a raw volume.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from tapstream.core.roots import under_roots
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper.protocol.handshake import TlsMode

Mode = Literal["sync", "async"]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class VolumeSpec(BaseModel):
    """One exported volume: NBD export `name`, backed by `path`, protected in `group`."""

    model_config = {"extra": "forbid"}

    name: str
    path: Path
    group: str
    mode: Mode = "sync"
    # False: the volume's content is already at the other site (a promoted or failed-back volume):
    # an empty stream starts with new writes and marked regions only, not a full INITIAL sync.
    initial_sync: bool = True

    @field_validator("name", "group")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(
                f"{v!r}: use letters, digits, '.', '_' or '-' (it becomes a Kafka key and topic name)"
            )
        return v


def parse_volumes(value: Any) -> Any:
    """Accept the JSON list or the compact `name=path:group[:mode],...` form."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    out = []
    for item in text.split(","):
        name, sep, rest = item.strip().partition("=")
        parts = rest.split(":")
        if not sep or len(parts) not in (2, 3):
            raise ValueError(f"{item!r}: expected name=path:group[:mode]")
        out.append(
            {
                "name": name,
                "path": parts[0],
                "group": parts[1],
                **({"mode": parts[2]} if len(parts) == 3 else {}),
            }
        )
    return out


class TapperSettings(TapstreamSettings):
    """Every field is TAPSTREAM_<FIELD>, e.g. tapper_volumes <- TAPSTREAM_TAPPER_VOLUMES."""

    tapper_volumes: Annotated[list[VolumeSpec], NoDecode] = Field(
        default_factory=list,
        description='Volumes to serve: JSON list [{"name","path","group","mode"}] or name=path:group[:mode],...',
    )
    tapper_listen_host: str = Field(
        "127.0.0.1", description="TCP address of the NBD server; empty for none."
    )
    tapper_listen_port: int = Field(
        10809, ge=0, le=65535, description="TCP port (10809 is NBD's); 0 picks one."
    )
    tapper_unix_socket: Path | None = Field(None, description="Also serve NBD on this Unix socket.")
    tapper_unix_socket_mode: int = Field(
        0o600,
        ge=0,
        le=0o777,
        description="Permissions of the Unix socket, octal (0600: only its owner may connect; TLS is not "
        "offered there, the file mode is the access control).",
    )
    tapper_unix_socket_owner: str = Field(
        "",
        description="`user[:group]` (names or ids) to chown the Unix socket to, e.g. the hypervisor's "
        "user; empty: the tapper's own.",
    )
    # Like qemu-nbd's --tls-creds and nbdkit's --tls: off by default so existing clients keep working.
    tapper_tls: TlsMode = Field(
        "off",
        description="NBD over TLS on TCP (NBD_OPT_STARTTLS, X.509): off; on (plain and TLS clients); "
        "require (plain clients get NBD_REP_ERR_TLS_REQD).",
    )
    tapper_tls_cert: Path | None = Field(
        None, description="Server certificate chain (PEM); required unless TLS is off."
    )
    tapper_tls_key: Path | None = Field(
        None, description="Server private key (PEM); required unless TLS is off."
    )
    tapper_tls_ca: Path | None = Field(
        None, description="CA certificates (PEM) that client certificates must chain to."
    )
    tapper_tls_verify_peer: bool = Field(
        False,
        description="Require a client certificate signed by TAPSTREAM_TAPPER_TLS_CA (as qemu-nbd's "
        "verify-peer); off: any TLS client is served (nbdkit's default).",
    )
    tapper_tls_handshake_timeout_s: float = Field(
        10.0, gt=0, description="A TLS handshake not done by then closes the connection."
    )
    tapper_host_id: str = Field(
        default_factory=socket.gethostname, description="Host name put in every event."
    )
    tapper_state_dir: Path = Field(
        Path(".tapstream/tapper"), description="Dirty bitmaps and seq files."
    )
    tapper_volume_roots: list[Path] | None = Field(
        None,
        description="Directories every volume's path must resolve under (symlinks followed, no "
        "'..'), JSON list; the site manager sets its own roots here. Unset: the paths in "
        "tapper_volumes are the operator's own and are not checked.",
    )
    tapper_chunk_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=8 * 1024 * 1024,
        description="Largest Write event; larger NBD writes are split (measured: bench --sweep).",
    )
    tapper_native: Literal["off", "auto", "on"] = Field(
        "auto",
        description="The compiled data path (services/tapper/native, Rust) for plain (not TLS) "
        "connections, sync and async: off; auto (when built); on (refuse to start unless built). "
        "TLS connections stay on the Python path.",
    )
    tapper_publish_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Sync mode: a request whose events Kafka has not acked by then fails with EIO.",
    )
    tapper_hold_timeout_s: float = Field(
        2.0, gt=0, description="Longest a checkpoint may hold completions."
    )
    tapper_bitmap_granule: int = Field(
        64 * 1024, ge=4096, description="Bytes per dirty-bitmap bit (a power of two)."
    )
    tapper_bitmap_extent: int = Field(
        4 * 1024 * 1024,
        ge=4096,
        description="Async mode: a new dirty bit reserves its whole aligned extent in one msync (a power of two, "
        ">= the granule); larger means fewer msyncs and more to resend after a crash.",
    )
    tapper_bitmap_cool_s: float = Field(
        10.0,
        ge=0,
        description="Async mode: a region's dirty bit is cleared once it was acked and left alone this "
        "long, so a region written again soon needs no new msync before its reply (DRBD's activity "
        "log keeps hot extents likewise). Costs a larger delta sync after a crash: at most what was "
        "written in this many seconds.",
    )
    tapper_bitmap_ahead: int = Field(
        1,
        ge=0,
        le=16,
        description="Async mode: extents reserved after the one written, so sequential writers "
        "do not wait for an msync at each extent boundary.",
    )
    tapper_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "none", description="Producer compression of the write stream (measured: bench --sweep)."
    )
    # 0: librdkafka still batches what queues behind in-flight requests; measured on 2 cores, 4 KiB
    # records, 16 in flight: 0 ms gives 10.9k acks/s (p50 0.7 ms) against 7.3k at 1 ms and 2.3k at 5 ms.
    tapper_linger_ms: float = Field(
        0.0, ge=0, description="Producer batching delay of sync volumes (0: send at once)."
    )
    tapper_async_linger_ms: float = Field(
        5.0,
        ge=0,
        description="Producer batching delay of async volumes: their replies never wait for Kafka, "
        "so batching costs the VM nothing and cuts librdkafka's CPU per event (RPO grows by it).",
    )
    tapper_async_backlog_bytes: int = Field(
        64 << 20,
        ge=1 << 20,
        description="Async volumes: event bytes Kafka has not acked yet past which the volume goes "
        "ahead (writes only mark the dirty bitmap; a DELTA sync catches up once the backlog "
        "drained, DRBD's congestion policy). Bounds the tapper's memory per volume.",
    )
    tapper_retention_hours: int = Field(
        168, ge=1, description="Retention of new write topics (≥ journal history + margin)."
    )
    tapper_partitions: int = Field(
        0, ge=0, description="Partitions of new write topics; 0 = one per volume of the group."
    )
    tapper_announce_interval_s: float = Field(
        2.0, gt=0, description="How often the tapper announces its volumes on tapstream.control."
    )

    # One client may not starve the others (qemu-nbd limits clients with --shared, nbdkit with
    # its limit filter). No 0-means-unlimited: every limit has a floor.
    tapper_max_connections_per_export: int = Field(
        16,
        ge=1,
        description="NBD connections in transmission per export; one more is refused "
        "(NBD_REP_ERR_POLICY to NBD_OPT_GO).",
    )
    tapper_max_inflight_bytes: int = Field(
        64 * 1024 * 1024,
        ge=32 * 1024 * 1024,
        description="READ and WRITE bytes in flight per connection before the server stops "
        "reading from it (at least the 32 MiB maximum payload).",
    )
    tapper_negotiation_timeout_s: float = Field(
        30.0, gt=0, description="A connection that has not chosen an export by then is closed."
    )
    tapper_inline_zero_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description="WRITE_ZEROES/TRIM up to this size run on the event loop; larger ones in a "
        "zeroing thread while requests that overlap them wait (the others go on).",
    )

    @field_validator("tapper_volumes", mode="before")
    @classmethod
    def _parse_volumes(cls, v: Any) -> Any:
        return parse_volumes(v)

    @field_validator("tapper_volumes")
    @classmethod
    def _unique_names(cls, v: list[VolumeSpec]) -> list[VolumeSpec]:
        names = [s.name for s in v]
        if len(names) != len(set(names)):
            raise ValueError("volume names must be unique")
        return v

    @field_validator("tapper_unix_socket_mode", mode="before")
    @classmethod
    def _octal(cls, v: Any) -> Any:
        return int(v, 8) if isinstance(v, str) else v  # "0600", "600" and "0o600" all mean 0o600

    @field_validator("tapper_bitmap_granule", "tapper_bitmap_extent")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"{v} is not a power of two")
        return v

    @model_validator(mode="after")
    def _under_roots(self) -> TapperSettings:
        # The volumes are served over NBD and copied into Kafka: never a file outside the roots.
        if self.tapper_volume_roots is not None:
            for spec in self.tapper_volumes:
                what = f"volume {spec.name!r}: path"
                spec.path = under_roots(
                    str(spec.path), self.tapper_volume_roots, what, "TAPPER_VOLUME_ROOTS"
                )
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> TapperSettings:
        if self.tapper_tls != "off" and not (self.tapper_tls_cert and self.tapper_tls_key):
            raise ValueError(
                "TAPSTREAM_TAPPER_TLS is on: set TAPSTREAM_TAPPER_TLS_CERT and TAPSTREAM_TAPPER_TLS_KEY"
            )
        if self.tapper_tls_verify_peer and not self.tapper_tls_ca:
            raise ValueError("TAPSTREAM_TAPPER_TLS_VERIFY_PEER needs TAPSTREAM_TAPPER_TLS_CA")
        return self

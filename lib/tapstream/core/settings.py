"""One way to configure every service: pydantic-settings models read from `TAPSTREAM_*` variables.

Values come, highest first, from the process environment, then from the env file (by default
`.tapstream/local.env`, written by `make up`; `TAPSTREAM_ENV_FILE` names another one), then from the
documented defaults. A bad value fails at start with a message that names the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "TAPSTREAM_"
DEFAULT_ENV_FILE = Path(".tapstream/local.env")

Site = Literal["protected", "recovery"]


def env_file() -> Path | None:
    """The env file to read: `TAPSTREAM_ENV_FILE` if set (empty: none), else `.tapstream/local.env`."""
    # The only direct environment read: it decides where the other settings come from.
    named = os.environ.get(f"{ENV_PREFIX}ENV_FILE")
    if named is None:
        return DEFAULT_ENV_FILE
    return Path(named) if named else None


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable and what is wrong."""


class TapstreamSettings(BaseSettings):
    """Settings every service shares: where the two sites' Kafka clusters and databases are."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=None,  # set per call in load(), so TAPSTREAM_ENV_FILE is honoured at start, not import
        extra="ignore",
        validate_default=True,
    )

    site: Site = Field("protected", description="Which site this process belongs to.")
    protected_bootstrap: str = Field(
        "127.0.0.1:19092", description="Bootstrap servers of the protected site's Kafka cluster."
    )
    recovery_bootstrap: str = Field(
        "127.0.0.1:19192", description="Bootstrap servers of the recovery site's Kafka cluster."
    )
    protected_database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:15432/postgres"),
        description="PostgreSQL URL of the protected site (holds a password, never logged).",
    )
    recovery_database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:15433/postgres"),
        description="PostgreSQL URL of the recovery site (holds a password, never logged).",
    )
    topic_prefix: str = Field("tapstream", description="Prefix of every topic tapstream uses.")
    protected_alias: str = Field(
        "protected",
        description="MirrorMaker 2 alias of the protected cluster (mirrored topic prefix).",
    )
    recovery_alias: str = Field(
        "recovery",
        description="MirrorMaker 2 alias of the recovery cluster (mirrored topic prefix).",
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent schema registry URL; unset means Avro single-object encoding."
    )
    schema_registry_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Seconds a schema registry request may take before it counts as down.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    replica_dir: Path = Field(
        Path(".tapstream/replicas"),
        description="Recovery site: replica volumes (VDSA applies, restore reads).",
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["json", "console"] = Field("json", description="Structured log rendering.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 means none.")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint listens on.")
    control_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Keys (HMAC-SHA256) that sign and verify tapstream.control commands, as JSON "
        '{"key id": "secret"}; a verifier accepts any of them, so a new key is added everywhere '
        "before it signs and an old one removed after. Empty: commands are neither signed nor "
        "checked (a WARNING at start).",
    )
    control_key_id: str | None = Field(
        None,
        description="The key of TAPSTREAM_CONTROL_KEYS that signs; unset: the only one there "
        "(required when there are several).",
    )
    control_max_age_s: float = Field(
        300.0,
        gt=0,
        description="A signed command older or further in the future than this (by its ts) is "
        "refused as a replay where commands are acted on once (tapper).",
    )

    @field_validator("control_key_id")
    @classmethod
    def _signing_key_known(cls, key_id: str | None, info: ValidationInfo) -> str | None:
        keys = info.data.get("control_keys") or {}
        key_id = key_id or None  # an empty variable: unset
        if key_id is not None and key_id not in keys:
            raise ValueError("not a key of TAPSTREAM_CONTROL_KEYS")
        if key_id is None and len(keys) > 1:
            raise ValueError("must name the signing key among TAPSTREAM_CONTROL_KEYS")
        return key_id

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers of this process's own site."""
        return self.protected_bootstrap if self.site == "protected" else self.recovery_bootstrap

    @property
    def database_url(self) -> str:
        """Database URL of this process's own site."""
        url = (
            self.protected_database_url if self.site == "protected" else self.recovery_database_url
        )
        return url.get_secret_value()

    def topic(self, name: str) -> str:
        """Full name of one of our topics, e.g. topic("writes.g1") -> "tapstream.writes.g1"."""
        return f"{self.topic_prefix}.{name}"

    def mirrored(self, topic: str, source: Site = "protected") -> str:
        """Name MirrorMaker 2 gives `topic` on the other cluster (DefaultReplicationPolicy)."""
        alias = self.protected_alias if source == "protected" else self.recovery_alias
        return f"{alias}.{topic}"


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: object) -> S:
    """Build a settings object, turning validation errors into one message naming each variable."""
    prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
    path = env_file()
    if path is not None and path != DEFAULT_ENV_FILE and not path.is_file():
        # A file named on purpose must exist; only the default one may be missing (no `make up` yet).
        raise SettingsError(f"invalid configuration:\n  {ENV_PREFIX}ENV_FILE: {path} is not a file")
    try:
        use = path if path is not None and path.is_file() else None
        return cls(_env_file=use, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]] or ["?"]
            # The variable is the field (loc[0]); the rest (list index, union member) is detail.
            where = f" at {'.'.join(loc[1:])}" if len(loc) > 1 else ""
            lines.append(
                f"{prefix}{loc[0]}".upper() + f"{where}: {err['msg']} (got {err.get('input')!r})"
            )
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except SourceError as exc:
        # pydantic-settings fails before validation when a list/dict value is not JSON.
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        variable = f"{prefix}{field}".upper()
        raise SettingsError(
            f'invalid configuration:\n  {variable}: not valid JSON (lists and maps are JSON, e.g. ["g1"])'
        ) from None

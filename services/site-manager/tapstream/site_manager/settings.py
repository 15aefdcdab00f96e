"""Site manager settings: TAPSTREAM_SITE_MANAGER_* (plus the shared TAPSTREAM_* ones: TAPSTREAM_SITE
says which site this manager runs; its database is that site's)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from tapstream.core.settings import TapstreamSettings
from tapstream.site_manager.paths import default_roots


class SiteManagerSettings(TapstreamSettings):
    site_manager_host: str = Field("127.0.0.1", description="Address the REST API listens on.")
    site_manager_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the REST API (0 picks one; default 8470 protected, 8471 recovery).",
    )
    site_manager_protected_url: str = Field(
        "http://127.0.0.1:8470", description="The protected site's manager (CLI)."
    )
    site_manager_recovery_url: str = Field(
        "http://127.0.0.1:8471", description="The recovery site's manager (CLI)."
    )
    site_manager_timeout_s: float = Field(
        30.0, gt=0, description="CLI: how long one REST request may take."
    )
    site_manager_state_dir: Path = Field(
        Path(".tapstream/site-manager"),
        description="This site's working files: promoted volumes, failover-test images, service logs.",
    )
    site_manager_rebuild: bool = Field(
        False,
        description="At start, drop the Postgres projection and rebuild it from tapstream.events.",
    )
    site_manager_nbd_host: str = Field(
        "127.0.0.1", description="Address NBD exports of this site listen on."
    )
    site_manager_run_services: bool = Field(
        True,
        description="Run this site's tappers, VDSAs and journals for the groups (the local agent).",
    )
    site_manager_only_groups: list[str] = Field(
        default_factory=list,
        description=(
            "Run services and recover interrupted operations only for these groups, JSON list "
            "(empty: every group)."
        ),
    )
    site_manager_apply_delay_s: float = Field(
        0.0,
        ge=0,
        description="Recovery site: journal history the VDSA keeps before applying to replicas "
        "(0: a group's own journal_history_s).",
    )
    site_manager_stop_services: bool = Field(
        False,
        description="Stop this site's services when the site manager stops; false: they keep serving "
        "(the data path outlives the control plane) and the next site manager adopts them.",
    )
    site_manager_stop_timeout_s: float = Field(
        30.0, gt=0, description="How long a child service may take to stop."
    )
    # --- where volumes may live (site_manager/paths.py) ----------------------------------------
    site_manager_volume_roots: list[Path] | None = Field(
        None,
        description="Directories a volume's path (its disk image at the protected site) must "
        "resolve under, symlinks followed, JSON list; unset: /var/lib/libvirt/images, "
        "/var/lib/tapstream/volumes and <state dir>/volumes.",
    )
    site_manager_target_roots: list[Path] | None = Field(
        None,
        description="Directories a volume's target_path (where the recovery site promotes it) must "
        "resolve under, JSON list; unset: the same defaults as site_manager_volume_roots.",
    )
    # --- who may call the REST API (site_manager/auth.py) -------------------------------------
    site_manager_tokens_file: Path | None = Field(
        None,
        description="Hashed API tokens (JSON, mode 0600); default tokens.json in the state dir. "
        "Issue the first one on this host: `python -m tapstream.site_manager token issue NAME --role admin`.",
    )
    site_manager_tls_certfile: Path | None = Field(
        None, description="Serve the REST API over HTTPS with this certificate (PEM, chain first)."
    )
    site_manager_tls_keyfile: Path | None = Field(
        None, description="The private key of site_manager_tls_certfile (PEM)."
    )
    site_manager_tls_client_ca: Path | None = Field(
        None,
        description="mTLS: require a client certificate signed by this CA (PEM) besides the token.",
    )
    site_manager_console: bool = Field(
        True,
        description="Serve the web console at /console on the API's port (same tokens and roles).",
    )
    # --- the CLI's side of it ------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        None,
        description="CLI: the bearer token sent to the site managers (TAPSTREAM_API_TOKEN); "
        "unset: read from api_token_file.",
    )
    api_token_file: Path = Field(
        Path("~/.config/tapstream/token"),
        description="CLI: a file holding the token, used when TAPSTREAM_API_TOKEN is unset.",
    )
    api_ca_file: Path | None = Field(
        None,
        description="CLI: CA bundle (PEM) that signed the site managers' HTTPS certificates "
        "(unset: the system's CAs).",
    )
    api_client_cert: Path | None = Field(
        None,
        description="CLI: client certificate (PEM, key included or in api_client_key) for mTLS.",
    )
    api_client_key: Path | None = Field(None, description="CLI: the key of api_client_cert (PEM).")

    @property
    def api_port(self) -> int:
        if self.site_manager_port is not None:
            return self.site_manager_port
        return 8470 if self.site == "protected" else 8471

    @property
    def volume_roots(self) -> list[Path]:
        roots = self.site_manager_volume_roots
        return default_roots(self.site_manager_state_dir) if roots is None else roots

    @property
    def target_roots(self) -> list[Path]:
        roots = self.site_manager_target_roots
        return default_roots(self.site_manager_state_dir) if roots is None else roots

    @property
    def tokens_file(self) -> Path:
        return self.site_manager_tokens_file or self.site_manager_state_dir / "tokens.json"

    def url(self, site: str) -> str:
        return (
            self.site_manager_protected_url
            if site == "protected"
            else self.site_manager_recovery_url
        )

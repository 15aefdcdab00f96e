"""The server's TLS context for NBD_OPT_STARTTLS, built from PEM files (X.509 only: TLS-PSK as
qemu-nbd offers it needs Python 3.13's ssl). Rebuilt when a file changes, so a renewed certificate
is served to the next client without restarting the tapper (connections already up keep theirs)."""

from __future__ import annotations

import ssl
from pathlib import Path

from tapstream.core.logging import get_logger

log = get_logger("tapstream.tapper.tls")


def server_context(cert: Path, key: Path, ca: Path | None, verify_peer: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the NBD protocol document: 1.2 or later
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    # CERT_OPTIONAL would still let a client without a certificate in: it is all or nothing.
    ctx.verify_mode = ssl.CERT_REQUIRED if verify_peer else ssl.CERT_NONE
    return ctx


class TlsCredentials:
    """The current context; `context()` checks the files' mtimes and reloads after a change."""

    def __init__(
        self, cert: Path, key: Path, ca: Path | None = None, verify_peer: bool = False
    ) -> None:
        self.files = [p for p in (cert, key, ca) if p is not None]
        self.cert, self.key, self.ca, self.verify_peer = cert, key, ca, verify_peer
        self._stamp = self._mtimes()
        self._ctx = server_context(cert, key, ca, verify_peer)  # bad files fail the start

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns for p in self.files)

    def context(self) -> ssl.SSLContext:
        try:
            stamp = self._mtimes()
            if stamp != self._stamp:
                self._ctx = server_context(self.cert, self.key, self.ca, self.verify_peer)
                self._stamp = stamp
                log.info("reloaded the TLS certificates", cert=str(self.cert))
        except (OSError, ssl.SSLError, ValueError) as exc:
            # half-written during a renewal: keep serving the last good ones, try again next time
            log.warning("cannot reload the TLS certificates", error=str(exc))
        return self._ctx

"""Free TCP ports for the servers we start and tell where to listen (tapper, qemu-nbd, site manager).

Asking the kernel for port 0 hands out a port from the ephemeral range, which any outgoing
connection (Kafka, Postgres clients) may take between our check and the server's bind. Ports just
below that range are never given to outgoing connections, so the check stays true until the bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

SPAN = 8000  # how many ports below the ephemeral range we choose from


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1", tries: int = 500) -> int:
    """A port nothing listens on, chosen below the ephemeral range; RuntimeError if none is found."""
    high = ephemeral_low() - 1
    low = max(1024, high - SPAN)
    for _ in range(tries):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high} on {host}: too many servers running?")

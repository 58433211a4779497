"""Running Folio as a real subprocess: the console script, a free port, waiting for a server."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path


def folio_command() -> list[str]:
    """The installed console script, to run as a real subprocess."""
    exe = Path(sys.executable).with_name("folio")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "folio.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base: str, seconds: float) -> bool:
    """Poll `base`/healthz until it answers 200 (True) or `seconds` pass (False)."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.05)
    return False

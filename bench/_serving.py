"""What the serving benchmarks share: `folio serve` started as a child process on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def start_folio_serve(*args: str, wait_s: float = 60, **popen) -> tuple[subprocess.Popen, str]:
    """`folio serve ARGS --port P` on a free port: (the process, its base URL), once /healthz answers or
    `wait_s` seconds have passed. The caller terminates the process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "folio.cli", "serve", *args, "--port", str(port)],
                              stdout=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    return server, base

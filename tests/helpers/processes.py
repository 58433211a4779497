"""Running Folio as a real subprocess: the console script, a fork server for many short runs, a free port,
waiting for a server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def folio_command() -> list[str]:
    """The installed console script, to run as a real subprocess."""
    exe = Path(sys.executable).with_name("folio")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "folio.cli"]


def run_folio(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`folio ARGS` run to its end as a real subprocess, its output captured as text."""
    return subprocess.run([*folio_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


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


# A process that imports Folio (and torch) once, then forks a child per command: each child is a process of
# its own (its own exit status, file descriptors, working directory and environment) that runs
# `folio.cli.main(argv)` as the console script does, without paying the ~3 s import again. Every module of the
# package is imported first (`folio --help` imports none of the tasks: a child would import them all again).
# Nothing has run a torch operation before the fork, so no thread pool is copied half-alive.
_FORK_SERVER = r"""
import importlib, io, json, os, pkgutil, signal, sys, traceback
import folio, folio.cli

for module in pkgutil.walk_packages(folio.__path__, "folio."):
    try:
        importlib.import_module(module.name)
    except ImportError:  # an optional extra that is not installed: the command that needs it says so itself
        pass

def child(job):
    os.chdir(job["cwd"])
    os.environ.update(job["env"])
    for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(job[name], flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True)
    signal.alarm(job["timeout"])
    sys.argv = ["folio", *job["argv"]]
    try:
        code = folio.cli.main(job["argv"])
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) or exit.code is None else (print(exit.code, file=sys.stderr) or 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class ForkServer:
    """Runs `folio ARGV...` in forked children of one process that imported Folio once (see above); one
    command at a time. `run` returns (exit status, or None when killed after `timeout` seconds; stdout; stderr)."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)

    def run(self, argv: list[str], cwd: Path, stdin: bytes = b"", env: dict | None = None,
            timeout: int = 180) -> tuple[int | None, bytes, bytes]:
        files = {name: Path(cwd).parent / f".{Path(cwd).name}.{name}" for name in ("stdin", "stdout", "stderr")}
        files["stdin"].write_bytes(stdin)
        job = {"argv": argv, "cwd": str(cwd), "env": env or {}, "timeout": timeout,
               **{name: str(path) for name, path in files.items()}}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        status = int(self.process.stdout.readline())
        outputs = [files[name].read_bytes() for name in ("stdout", "stderr")]
        for path in files.values():
            path.unlink()
        return (None if status == -signal.SIGALRM else status), *outputs

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@contextlib.contextmanager
def serving(app, seconds: float = 30):
    """A real uvicorn server for `app` on a free loopback port, in a thread: yields its base URL once /healthz
    answers, and stops it on exit."""
    import uvicorn

    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                             timeout_graceful_shutdown=2))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{instance.config.port}"
    try:
        assert wait_until_healthy(base, seconds), f"the server at {base} did not come up in {seconds} s"
        yield base
    finally:
        instance.should_exit = True
        thread.join(timeout=10)

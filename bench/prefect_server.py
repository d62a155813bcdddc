"""A real local Prefect server for the benchmarks: `prefect server start` on a free port, own SQLite DB.

The fault matrix needs a server, not the embedded one: runs are cancelled through the API, a runner
(`serve()`) picks runs up, and the janitor reads run states. `local_prefect_server()` reuses the
server named by PREFECT_API_URL when one is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.processes import stop_process_group


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"prefect server not healthy after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def prefect_server_process(home: Path, *, timeout_s: float = 120) -> Iterator[dict[str, str]]:
    """Run `prefect server start` on a free port with its SQLite DB under `home`; yield its environment.

    The server runs in its own process group and is stopped (SIGTERM, then SIGKILL) on exit.
    """
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false")
    log = home / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(home))
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log, timeout_s)
        yield env
    finally:
        stop_process_group(proc)


@contextmanager
def local_prefect_server(timeout_s: float = 120) -> Iterator[dict[str, str]]:
    """Yield the environment of a running Prefect server (PREFECT_API_URL, PREFECT_HOME), started if needed.

    The current process is pointed at it for the duration (settings context); subprocesses get the env.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    if PREFECT_API_URL.value():       # set in the environment or in a settings context (a test's server)
        yield dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(PREFECT_HOME.value()))
        return
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as tmp, \
            prefect_server_process(Path(tmp), timeout_s=timeout_s) as env, \
            temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: tmp}):
        yield env

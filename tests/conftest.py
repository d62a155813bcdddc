"""Fixtures shared by every test folder: one real local Prefect server for the whole session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings


def _free_port() -> int:
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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> dict[str, str]:
    """A real `prefect server start` on a free port with its own SQLite DB; yields the env to use.

    The current process is pointed at it (PREFECT_API_URL, PREFECT_HOME) for the whole session, and
    subprocesses (serve(), workers) get the returned env.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = dict(os.environ,
               PREFECT_HOME=str(home),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO")
    log = home / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(home))
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log, timeout_s=90)
        # Prefect reads its settings once at import; a settings context is how to change them now.
        # (Threads a test starts itself must run in a copy of this context: contextvars.copy_context.)
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: str(home)}):
            yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

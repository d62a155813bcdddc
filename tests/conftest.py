"""Fixtures shared by every test folder: one real local Prefect server for the whole session."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from bench.prefect_server import prefect_server_process


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> dict[str, str]:
    """A real `prefect server start` on a free port with its own SQLite DB; yields the env to use.

    The current process is pointed at it for the whole session (settings context), and
    subprocesses (serve(), workers) get the returned env.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    # Prefect reads its settings once at import; a settings context is how to change them now.
    # (Threads a test starts itself must run in a copy of this context: contextvars.copy_context.)
    with prefect_server_process(home, timeout_s=90) as env, \
            temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: str(home)}):
        yield env

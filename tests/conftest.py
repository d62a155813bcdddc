"""Fixtures shared by every test folder: one real local Prefect server for the whole session."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from bench.prefect_server import prefect_server_process

# Server-side pacing of retries, not behaviour a test checks: Prefect's defaults suit a busy
# production server, and each one left as is costs the suite whole seconds per wait.
TEST_SERVER_SETTINGS = {
    # A dead holder's expired lease (the stack lock of a killed run) is reclaimed within 1 s, not 15 s.
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
    # A client refused a global concurrency slot (the stack lock) asks again within ~2 s, not up to 30 s.
    "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
    # A deployment run held back by its deployment's limit (AwaitingConcurrencySlot) retries in 2 s, not 30 s.
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}

ServerFactory = Callable[..., AbstractContextManager[dict[str, str]]]


@pytest.fixture(scope="session")
def start_prefect_server(tmp_path_factory) -> ServerFactory:
    """Start a real `prefect server start` with TEST_SERVER_SETTINGS: `with start(name, timeout_s=...) as env`.

    The first server of the session migrates a fresh SQLite database and leaves a copy of it as it
    stood once healthy (before any test wrote to it); later servers start from a copy of that copy,
    which halves their start-up on 2 cores (migrations are most of it). Each server has its own DB.
    """
    template: list[Path] = []

    @contextmanager
    def start(name: str, *, timeout_s: float) -> Iterator[dict[str, str]]:
        home = tmp_path_factory.mktemp(name)
        if template:
            _copy_sqlite(template[0], home / "prefect.db")
        with ExitStack() as stack:
            with pytest.MonkeyPatch.context() as patch:    # read once, by the server process at its start
                for key, value in TEST_SERVER_SETTINGS.items():
                    patch.setenv(key, value)
                env = stack.enter_context(prefect_server_process(home, timeout_s=timeout_s))
            if not template:
                template.append(tmp_path_factory.mktemp("prefect-db-template") / "prefect.db")
                _copy_sqlite(home / "prefect.db", template[0])
            yield env

    return start


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database consistently, even while a server has it open (the backup API)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@pytest.fixture(scope="session")
def prefect_server(start_prefect_server) -> dict[str, str]:
    """A real `prefect server start` on a free port with its own SQLite DB; yields the env to use.

    The current process is pointed at it for the whole session (settings context), and
    subprocesses (serve(), workers) get the returned env.
    """
    # Prefect reads its settings once at import; a settings context is how to change them now.
    # (Threads a test starts itself must run in a copy of this context: contextvars.copy_context.)
    with start_prefect_server("prefect-home", timeout_s=90) as env, \
            temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: env["PREFECT_HOME"]}):
        yield env
        _send_what_prefect_still_holds()


def _send_what_prefect_still_holds() -> None:
    """Drain this process's Prefect log and event workers while the server still runs: left to the
    interpreter's exit, they retry the stopped server for over a minute ("Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)

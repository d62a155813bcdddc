"""Fixtures shared by every test folder: one real local Prefect server for the whole session (per
xdist worker), and the gate that runs timing-bound tests alone when the suite runs on two workers."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import IO

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

# Modules whose assertions bound simulated time by a few wall seconds at most (or bound wall time
# itself): under pytest-xdist each test of theirs runs alone, as in a serial run, because the other
# worker's load would become simulated lag (at 3000x, 0.1 s of CPU starvation is 300 simulated s).
EXCLUSIVE_MODULES = (
    "tests/e2e/test_download_stall_spin_up.py",          # the watch must start within ~1.5 s (100x)
    "tests/integration/test_download_stall_wait.py",     # failure within 1.5 wall s of lag (60x)
    "tests/integration/test_kuberay_faults.py",          # fatal signs within about a simulated minute
    "tests/integration/test_kuberay_ray_service.py",     # phase times and the validation timeout
    "tests/sandbox_gke/test_control_and_timing.py",      # start-up under 3 wall s; metered bills
    "tests/sandbox_gke/test_faults.py",                  # a bill within 200 simulated s (67 ms at 3000x)
    "tests/sandbox_kuberay/test_download_stall_and_gpu_memory.py",  # reads at chosen instants (+-15 s at 600x)
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("::")[0] in EXCLUSIVE_MODULES:
            item.add_marker(pytest.mark.exclusive)


GATE_ENV = "GKE_LLM_FLOWS_TEST_GATE"     # the folder of the workers' lock files, set by the xdist controller
_GATE_DIR = pytest.StashKey[str]()


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        config.stash[_GATE_DIR] = os.environ[GATE_ENV] = tempfile.mkdtemp(prefix="gke-llm-flows-gate-")


def pytest_unconfigure(config):
    if (folder := config.stash.get(_GATE_DIR, None)) is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, run an `exclusive` module (each test's setup, call and teardown, and the
    moments between them) while no other test runs; other tests share the gate one test at a time."""
    folder = os.environ.get(GATE_ENV)
    if folder is None or not hasattr(item.config, "workerinput"):   # serial: every test is alone already
        yield
        return
    exclusive = item.get_closest_marker("exclusive") is not None
    _GATE.enter(Path(folder), exclusive=exclusive)
    try:
        yield
    finally:
        # Keep the exclusive hold across an exclusive module (loadfile runs it on this worker, in order):
        # taking it per test would wait for a whole test of the other worker each time.
        same_module = nextitem is not None and nextitem.path == item.path
        if not (exclusive and same_module):
            _GATE.leave()


class _WorkerGate:
    """A readers-writer lock between xdist workers (flock): ordinary tests share it, exclusive ones own it.

    A writer first takes the turnstile and keeps it until it holds the lock, so readers queue behind
    it instead of overtaking it with back-to-back short tests."""

    def __init__(self) -> None:
        self._lock: IO[str] | None = None

    def enter(self, folder: Path, *, exclusive: bool) -> None:
        if self._lock is not None:          # still held from the previous test of an exclusive module
            return
        with open(folder / "turnstile", "a") as turnstile:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            lock = open(folder / "lock", "a")  # held open until leave()
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        self._lock = lock                   # closing the turnstile file released it

    def leave(self) -> None:
        if self._lock is not None:
            self._lock.close()              # closing the file releases its flock
            self._lock = None


_GATE = _WorkerGate()


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

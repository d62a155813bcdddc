"""Helpers for end-to-end tests that run `python -m deployments.serve` on the session's Prefect server.

Processes: start a runner in its own process group, kill it the way a host death does (every
descendant, including flow processes Prefect put in sessions of their own), find a run's process.
Prefect API: wait for something, read runs of a deployment, wait for a run's final state, remove
the deployments (and their trigger automations) a module registered on the shared server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun

from bench.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


# -- processes -------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every descendant of `pid`, read from /proc (children in other sessions included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_processes(flow_run_id: Any) -> list[int]:
    """Live (not zombie) processes of this user running flow run `flow_run_id` (by its env)."""
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0") \
                    and ") Z " not in (entry / "stat").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_runner(proc: subprocess.Popen) -> list[int]:
    """SIGKILL `proc`'s process group and every descendant at once, as a host death or systemd's
    control-group kill would: no process is left to report anything. Returns the pids killed."""
    os.killpg(proc.pid, signal.SIGSTOP)     # freeze the runner: it starts no new child meanwhile
    pids = [proc.pid, *descendants(proc.pid)]
    _signal_all(pids, signal.SIGSTOP)
    _signal_all(pids, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return pids


@contextmanager
def serving(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `python -m deployments.serve ARGS` in its own process group; stop it and every descendant
    afterwards (SIGTERM first: serve() cancels in-flight runs and pauses its deployments)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deployments.serve", *args], env=env, cwd=str(ROOT),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            pids = descendants(proc.pid)
            stop_process_group(proc, grace_s=30)
            _signal_all(pids + descendants(proc.pid), signal.SIGKILL)


# -- Prefect API -----------------------------------------------------------------------------------

def wait_for(what: str, probe: Callable[[], Any], *, timeout_s: float, alive: subprocess.Popen | None = None,
             log: Path | None = None, interval_s: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy and return that; fail the test on timeout, or
    at once if `alive` (a runner the wait depends on) exited. `log` is quoted in the failure."""
    deadline = time.monotonic() + timeout_s
    tail = lambda: f"\nlog {log}:\n{log.read_text(errors='replace')[-4000:]}" if log else ""  # noqa: E731
    while time.monotonic() < deadline:
        if (value := probe()):
            return value
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"the runner exited with {alive.returncode} while waiting for {what}{tail()}")
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}{tail()}")


def deployment_id(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).id


def has_deployment(name: str) -> bool:
    try:
        deployment_id(name)
        return True
    except Exception:  # noqa: BLE001 - ObjectNotFound until serve() has registered it
        return False


def read_run(run_id) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def runs_of(deployment: str) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id(deployment)])))


def final_state(run_id, *, expect: str, timeout_s: float, alive: subprocess.Popen | None = None,
                log: Path | None = None) -> FlowRun:
    """Wait for the run's final state; fail with its message unless its type is `expect`."""
    run = wait_for(f"run {run_id} to end", lambda: (r := read_run(run_id)).state_type.value in FINAL and r,
                   timeout_s=timeout_s, alive=alive, log=log)
    if run.state_type.value != expect:
        pytest.fail(f"run {run.name} ended {run.state_name}, not {expect}: {run.state.message}")
    return run


def run_logs(run_id) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(entry.message for entry in logs)


def delete_deployments(*names: str) -> None:
    """Remove deployments and their trigger automations: the session's server outlives a module."""
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except Exception:  # noqa: BLE001 - never registered (serve() failed early)
                continue
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            client.delete_deployment(deployment.id)


def events(api_url: str, name: str, *, since: datetime, resource_id: str | None = None) -> list[dict]:
    """Events named `name` since `since` (about `resource_id` if given), read from the server's API."""
    wanted: dict[str, Any] = {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}
    if resource_id:
        wanted["resource"] = {"id": [resource_id]}
    response = httpx.post(f"{api_url}/events/filter", json={"filter": wanted, "limit": 50}, timeout=30)
    response.raise_for_status()
    return response.json()["events"]

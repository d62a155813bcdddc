"""Deployments end to end: `python -m deployments.serve` in a subprocess on a real local Prefect
server, against the sandbox, with runs started by a schedule, by the API (as the UI does), by events
and by state changes (cancel, a killed flow process).

The tests share one sandbox, one saved stack Block and one serve() process (starting them takes
most of a minute on a loaded machine). Each test first brings the stack to the state it needs
through the deployments themselves, and every teardown test ends with nothing billing; the module
ends with a spin-down that must leave no GPU node billing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelling

from blocks.prefect_blocks import ServingStackBlock
from deployments.events import MODEL_PUBLISHED, publish_model, stack_resource_id
from flows.demo import demo_stack_file, still_billing
from sandbox.app import Sandbox
from sandbox.hooks import ClusterRef
from tasks.clock import TIME_SCALE_ENV, ScaledClock
from tests.e2e._served import (
    delete_deployments,
    deployment_id,
    descendants,
    has_deployment,
    read_run,
    runs_of,
    serving,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIME_SCALE = 200.0
SPIN_UP_IN_S = 20          # the extra schedule's first run: after serve() has registered everything
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
POOL = "kuberay-gpu-cluster/gpu-node-pool"
SPIN_UP, SPIN_DOWN, AFTER_CRASH, ON_CHANGE = ("serve-llm/spin-up", "teardown-llm/spin-down",
                                             "teardown-llm/after-crash", "redeploy-llm/on-change")


@dataclass
class Served:
    sandbox: Sandbox
    block_name: str
    stack_name: str
    proc: subprocess.Popen
    log: Path
    api_url: str

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


# -- processes -------------------------------------------------------------------------------------

def _flow_process(serve_pid: int, flow_run_id: Any) -> int | None:
    """The pid of the child of serve() that runs `flow_run_id`."""
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for pid in descendants(serve_pid):
        try:
            if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    return None


# -- Prefect API helpers --------------------------------------------------------------------------

def _wait_for(what: str, probe: Callable[[], Any], *, timeout_s: float, served: Served | None = None,
              interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := probe()):
            return value
        if served is not None and served.proc.poll() is not None:
            pytest.fail(f"serve() exited with {served.proc.returncode} while waiting for {what}:\n"
                        f"{served.log_tail()}")
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}" +
                (f"\nserve log:\n{served.log_tail()}" if served else ""))


def _new_run(served: Served, deployment: str, *, after: datetime, timeout_s: float = 60,
             where: Callable[[FlowRun], bool] = lambda run: True) -> FlowRun:
    return _wait_for(f"a run of {deployment}", lambda: next(
        (r for r in runs_of(deployment) if r.created and r.created >= after and where(r)), None),
        timeout_s=timeout_s, served=served)


def _final(served: Served, run_id, *, expect: str, timeout_s: float = 240) -> FlowRun:
    """Wait for the run's final state; fail with its message and the serve log unless it is `expect`."""
    run = _wait_for(f"run {run_id} to end", lambda: (r := read_run(run_id)).state_type.value in FINAL and r,
                    timeout_s=timeout_s, served=served)
    if run.state_type.value != expect:
        pytest.fail(f"run {run.name} ended {run.state_name}: {run.state.message}\n{served.log_tail()}")
    return run


def _create_run(served: Served, deployment: str, parameters: dict | None = None) -> httpx.Response:
    """POST /deployments/{id}/create_flow_run, the call the UI's run form makes.

    Retries 503 as Prefect's own client does: the SQLite server answers it when its database is
    locked, which happens on a loaded machine."""
    url = f"{served.api_url}/deployments/{deployment_id(deployment)}/create_flow_run"
    for attempt in range(6):
        response = httpx.post(url, json={"parameters": parameters or {}, "state": {"type": "SCHEDULED"}},
                              timeout=30)
        if response.status_code != 503:
            break
        time.sleep(1 + attempt)
    return response


def _run_to_end(served: Served, deployment: str, parameters: dict | None = None, *, expect="COMPLETED",
                timeout_s: float = 240) -> FlowRun:
    response = _create_run(served, deployment, parameters)
    assert response.status_code == 201, response.text
    return _final(served, response.json()["id"], expect=expect, timeout_s=timeout_s)


def _logs(run_id) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def _artifact(run_id, key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return "\n".join(str(a.data) for a in found if a.key == key)


# -- the sandbox side -----------------------------------------------------------------------------

def _cluster(served: Served) -> dict | None:
    return next(iter(served.sandbox.inventory()["clusters"]), None)


def _ray_service(served: Served) -> dict | None:
    """The live RayService object in the sandbox's Kubernetes, or None."""
    cluster = _cluster(served)
    if cluster is None:
        return None
    kube = served.sandbox.hooks.get(ClusterRef(cluster["project"], cluster["location"], cluster["name"]))
    items = kube.ctx.store.list(("ray.io", "rayservices"))[0] if kube is not None else []
    return items[0] if items else None


def _ensure_up(served: Served) -> None:
    """Spin the stack up through the spin-up deployment unless it already bills and serves."""
    if still_billing(served.sandbox.inventory()) == [POOL] and _ray_service(served) is not None:
        return
    _run_to_end(served, SPIN_UP)


def _ensure_nothing_billing(served: Served, *, timeout_s: float = 90) -> None:
    _wait_for("no GPU node billing", lambda: still_billing(served.sandbox.inventory()) == [],
              timeout_s=timeout_s, served=served)


# -- fixture --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory) -> Iterator[Served]:
    """The sandbox, a saved stack Block aimed at it, and `python -m deployments.serve --block`."""
    folder = tmp_path_factory.mktemp("deployments-e2e")
    with Sandbox(time_scale=TIME_SCALE, kubernetes=True) as sandbox:
        spec_file = demo_stack_file(sandbox.gke_url, folder)
        block = ServingStackBlock.from_yaml(spec_file)
        block_name = f"e2e-{uuid.uuid4().hex[:8]}"
        block.save(block_name)
        env = dict(prefect_server, PYTHONPATH=str(ROOT), PREFECT_RUNNER_POLL_FREQUENCY="1",
                   **{TIME_SCALE_ENV: ScaledClock(TIME_SCALE, anchor_epoch_s=sandbox.clock.anchor_epoch_s).to_env()})
        args = ["--block", block_name, "--spin-up-in", str(SPIN_UP_IN_S)]
        try:
            with serving(args, env, folder / "serve.log") as proc:
                state = Served(sandbox, block_name, block.spec.name, proc, folder / "serve.log",
                               prefect_server["PREFECT_API_URL"])
                for name in (SPIN_UP, SPIN_DOWN, AFTER_CRASH, ON_CHANGE):
                    _wait_for(f"deployment {name}", lambda n=name: has_deployment(n), timeout_s=120,
                              served=state)
                # serve() creates a deployment's trigger automations after the deployment itself.
                for name, triggers in ((ON_CHANGE, 2), (AFTER_CRASH, 1)):
                    _wait_for(f"the automations of {name}", lambda n=name, t=triggers: len(_automations(n)) >= t,
                              timeout_s=60, served=state)
                yield state
                _run_to_end(state, SPIN_DOWN, {"delete_cluster_too": True, "reason": "end of the e2e module"})
                assert still_billing(sandbox.inventory()) == []
        finally:
            delete_deployments(SPIN_UP, SPIN_DOWN, AFTER_CRASH, ON_CHANGE, "llm-janitor/sweep")


def _automations(deployment: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_resource_related_automations(f"prefect.deployment.{deployment_id(deployment)}")


# -- tests ----------------------------------------------------------------------------------------

def test_a_model_event_without_model_source_starts_no_run_and_says_why(served):
    # First: it needs no stack, so it runs while the schedule of the next test is still ahead.
    from prefect.events import emit_event

    emitted_at = datetime.now(timezone.utc)
    event = emit_event(event=MODEL_PUBLISHED, resource={"prefect.resource.id": stack_resource_id(served.stack_name)},
                       payload={"model": "Qwen/Qwen2.5-0.5B-Instruct"})  # wrong key: breaks the contract
    ours = f"prefect.event.{event.id}"
    failed = _wait_for("the automation's action.failed event", lambda: [
        e for e in _events(served, "prefect.automation.action.failed", since=emitted_at)
        if ours in {r["prefect.resource.id"] for r in e.get("related", [])}], timeout_s=60, served=served)
    # All Prefect says is this: hence the payload contract in deployments/events.py.
    assert failed[0]["payload"]["reason"] == "Unable to create flow run from deployment: InvalidJinja()"
    assert [r for r in runs_of(ON_CHANGE) if r.created >= emitted_at] == []


def _events(served: Served, name: str, *, since: datetime) -> list[dict]:
    response = httpx.post(f"{served.api_url}/events/filter", timeout=30, json={
        "filter": {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}, "limit": 20})
    response.raise_for_status()
    return response.json()["events"]


def test_a_schedule_fires_and_spins_the_stack_up(served):
    soon = lambda run: run.auto_scheduled and run.expected_start_time.timestamp() < time.time() + 90  # noqa: E731
    run = _wait_for("the scheduled spin-up", lambda: next((r for r in runs_of(SPIN_UP) if soon(r)), None),
                    timeout_s=120, served=served)
    run = _final(served, run.id, expect="COMPLETED")
    assert run.parameters["stack"] == {"block_name": served.block_name}
    assert still_billing(served.sandbox.inventory()) == [POOL]
    assert _ray_service(served) is not None
    summary = _artifact(run.id, f"{served.stack_name}-spin-up")
    assert "red, yellow, blue, green" in summary                    # the guide's answer, validated


def test_updating_the_serving_block_triggers_a_redeploy(served):
    _ensure_up(served)
    block = ServingStackBlock.load(served.block_name)
    block.spec = block.spec.updated({"serving": {"max_num_seqs": 32}})
    saved_at = datetime.now(timezone.utc)
    block.save(served.block_name, overwrite=True)

    run = _new_run(served, ON_CHANGE, after=saved_at)
    run = _final(served, run.id, expect="COMPLETED")
    assert run.created_by.type == "AUTOMATION"
    assert run.parameters["reason"] == f"block {served.block_name} updated"
    assert "max_num_seqs: 32" in _ray_service(served)["spec"]["serveConfigV2"]
    assert still_billing(served.sandbox.inventory()) == [POOL]     # redeployed in place, never down


def test_two_spin_ups_of_one_stack_do_not_overlap(served):
    _ensure_up(served)      # cheap: both runs then converge on the running stack
    responses = [_create_run(served, SPIN_UP) for _ in range(2)]
    assert [r.status_code for r in responses] == [201, 201]
    runs = [_final(served, r.json()["id"], expect="COMPLETED", timeout_s=300) for r in responses]
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time, (first.end_time, second.start_time)
    with get_client(sync_client=True) as client:
        waited = [s.name for r in runs for s in client.read_flow_run_states(r.id)]
    assert "AwaitingConcurrencySlot" in waited                      # the deployment limit held it back
    assert still_billing(served.sandbox.inventory()) == [POOL]      # one stack, one GPU pool


def test_a_published_model_event_redeploys_with_the_payload_model_source(served):
    _ensure_up(served)
    emitted_at = datetime.now(timezone.utc)
    publish_model(served.stack_name, "Qwen/Qwen2.5-0.5B-Instruct")

    run = _new_run(served, ON_CHANGE, after=emitted_at)
    assert run.parameters["model_source"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert run.parameters["stack"] == {"block_name": served.block_name}    # the deployment's default
    _final(served, run.id, expect="COMPLETED")
    assert "model_source: Qwen/Qwen2.5-0.5B-Instruct" in _ray_service(served)["spec"]["serveConfigV2"]


def test_an_api_run_with_custom_parameters_works_and_a_bad_parameter_is_rejected_at_creation(served):
    _ensure_up(served)
    bad = _create_run(served, SPIN_DOWN, {"stack": {"block_name": "Not_A_Block_Name"}})
    assert bad.status_code == 409
    assert "stack.block_name" in bad.text and "Not_A_Block_Name" in bad.text
    bad = _create_run(served, SPIN_DOWN, {"delete_cluster_too": "sometimes"})
    assert bad.status_code == 409 and "delete_cluster_too" in bad.text

    run = _run_to_end(served, SPIN_DOWN, {"delete_cluster_too": True, "reason": "custom, from the API"})
    assert run.parameters == {"stack": {"block_name": served.block_name}, "delete_cluster_too": True,
                              "reason": "custom, from the API"}
    assert "custom, from the API" in _logs(run.id)
    assert still_billing(served.sandbox.inventory()) == []
    assert served.sandbox.inventory()["clusters"] == []              # delete_cluster_too honoured


def _spin_up_in_model_load(served: Served) -> FlowRun:
    """Start a spin-up through the API and return it once it waits for the (slowed) model load."""
    served.sandbox.inject({"kind": "slow_download", "model_id": "deepseek", "factor": 2})
    response = _create_run(served, SPIN_UP)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    _wait_for("the spin-up to wait for the model", lambda: read_run(run_id).state_type.value == "RUNNING"
              and _ray_service(served) is not None and still_billing(served.sandbox.inventory()) == [POOL],
              timeout_s=180, served=served)
    return read_run(run_id)


def _active_spin_ups() -> list[FlowRun]:
    """Spin-up runs running, waiting for a slot, or due within a minute (not next weekday's)."""
    soon = time.time() + 60
    return [r for r in runs_of(SPIN_UP) if r.state_type.value not in FINAL
            and (r.state_type.value != "SCHEDULED" or r.state_name == "AwaitingConcurrencySlot"
                 or r.expected_start_time.timestamp() < soon)]


def _ensure_down(served: Served) -> None:
    """Let any spin-up in progress finish, then spin down if anything bills."""
    _wait_for("no spin-up in progress", lambda: not _active_spin_ups(), timeout_s=300, served=served)
    if still_billing(served.sandbox.inventory()):
        _run_to_end(served, SPIN_DOWN)


def test_cancelling_a_spin_up_mid_wait_tears_the_stack_down(served):
    _ensure_down(served)
    try:
        run = _spin_up_in_model_load(served)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(message="cancelled by the e2e test"))
        _final(served, run.id, expect="CANCELLED", timeout_s=90)
        _ensure_nothing_billing(served)
        assert _ray_service(served) is None
    finally:
        served.sandbox.clear_faults("slow_download")


def test_killing_the_flow_process_tears_down_through_the_crash_chain(served):
    _ensure_down(served)
    try:
        run = _spin_up_in_model_load(served)
        pid = _wait_for("the flow process", lambda: _flow_process(served.proc.pid, run.id), timeout_s=30)
        killed_at = datetime.now(timezone.utc)
        os.kill(pid, signal.SIGKILL)
        _final(served, run.id, expect="CRASHED", timeout_s=90)
        chain = _new_run(served, AFTER_CRASH, after=killed_at, timeout_s=60,
                         where=lambda r: run.name in r.parameters.get("reason", ""))
        chain = _final(served, chain.id, expect="COMPLETED")
        assert chain.created_by.type == "AUTOMATION"
        assert chain.parameters["stack"] == {"block_name": served.block_name}
        assert chain.parameters["reason"] == f"spin-up run {run.name} ended Crashed"
        _ensure_nothing_billing(served)
    finally:
        served.sandbox.clear_faults("slow_download")

"""`prefect deploy --all` of deployments/prefect.yaml and `python -m deployments.setup` on a real local
Prefect server; then a process worker runs one of the deployed deployments from the project root it
is told about (GKE_LLM_FLOWS_DIR, resolved by the worker, not baked in at deploy time)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from bench.processes import stop_process_group
from deployments.catalog import AFTER_CRASH, ON_CHANGE, SPIN_DOWN, SPIN_UP, SWEEP
from deployments.render import DEFAULT_WORK_POOL, PREFECT_YAML
from deployments.setup import ZOMBIE_AUTOMATION
from flows.demo import demo_stack_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NAMES = {SPIN_UP: "serve-llm", SPIN_DOWN: "teardown-llm", AFTER_CRASH: "teardown-llm",
         ON_CHANGE: "redeploy-llm", SWEEP: "llm-janitor"}


def _run(args: list[str], env: dict[str, str], timeout_s: float = 240) -> str:
    done = subprocess.run(args, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """Setup, then `prefect deploy --all`; afterwards delete what was deployed and the automation.

    Shared by the module's tests (deploying takes two CLI processes): neither changes a deployment,
    the worker test only adds a run of one."""
    env = {k: v for k, v in prefect_server.items() if k != "GKE_LLM_FLOWS_DIR"}
    setup_out = _run([sys.executable, "-m", "deployments.setup", "--stack-name", "yaml-e2e"], env)
    _run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
          "--prefect-file", str(PREFECT_YAML.relative_to(ROOT))], env)
    with get_client(sync_client=True) as client:
        deployments = {name: client.read_deployment_by_name(f"{flow}/{name}") for name, flow in NAMES.items()}
    try:
        yield env, setup_out, deployments
    finally:
        with get_client(sync_client=True) as client:
            for d in deployments.values():
                client.delete_resource_owned_automations(f"prefect.deployment.{d.id}")
                client.delete_deployment(d.id)
            for automation in client.read_automations_by_name(ZOMBIE_AUTOMATION):
                client.delete_automation(automation.id)


def test_prefect_deploy_all_creates_every_deployment_with_schedules_triggers_and_limits(deployed):
    env, setup_out, deployments = deployed
    for name, d in deployments.items():
        assert d.entrypoint.startswith("flows/") and d.work_pool_name == DEFAULT_WORK_POOL
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                 {"directory": "{{ $GKE_LLM_FLOWS_DIR }}"}}], name
        assert d.enforce_parameter_schema and d.global_concurrency_limit.limit == 1
    up = deployments[SPIN_UP]
    (schedule,) = up.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 8 * * 1-5", "America/New_York")
    assert up.concurrency_options.collision_strategy.value == "ENQUEUE"
    with get_client(sync_client=True) as client:
        chain = client.read_resource_related_automations(f"prefect.deployment.{deployments[AFTER_CRASH].id}")
        redeploy = client.read_resource_related_automations(f"prefect.deployment.{deployments[ON_CHANGE].id}")
        zombie = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        limit = client.read_global_concurrency_limit_by_name("gke-llm-flows-stack-yaml-e2e")
    assert sorted(sorted(a.trigger.expect) for a in chain) == [   # spin-up ended badly; spin-down crashed
        ["prefect.flow-run.Crashed"],
        ["prefect.flow-run.Crashed", "prefect.flow-run.Failed", "prefect.flow-run.TimedOut"]]
    assert sorted(a.trigger.expect.pop() for a in redeploy) == ["gke-llm-flows.model.published",
                                                               "prefect.block-document.updated"]
    assert len(zombie) == 1 and zombie[0].trigger.within.total_seconds() == 720   # 4 x 180 s heartbeats
    assert limit.limit == 1
    assert "work_pool: gke-llm-flows" in setup_out

    again = _run([sys.executable, "-m", "deployments.setup"], env)      # idempotent, sees the chain now
    assert "crash_chain: deployed" in again
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(ZOMBIE_AUTOMATION)) == 1


def test_a_process_worker_runs_a_deployed_flow_from_the_directory_it_is_given(deployed, tmp_path):
    from sandbox.app import Sandbox

    env, _, deployments = deployed
    worker_env = dict(env, GKE_LLM_FLOWS_DIR=str(ROOT), PREFECT_WORKER_QUERY_SECONDS="2")
    with Sandbox(time_scale=200) as sandbox, open(tmp_path / "worker.log", "w") as log:
        stack = {"file": str(demo_stack_file(sandbox.gke_url, tmp_path))}
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                deployments[SPIN_DOWN].id, parameters={"stack": stack, "reason": "worker e2e"})
        # Started from elsewhere: only the pull step can bring the flow into the project root.
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", DEFAULT_WORK_POOL],
                                  env=worker_env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            state = _wait_final(run.id, timeout_s=180)
        finally:
            stop_process_group(worker)
    assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]


def _wait_final(run_id, *, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state_type.value
            if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return state
            time.sleep(1)
    return "TIMED OUT"

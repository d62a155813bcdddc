"""The whole runner SIGKILLed mid spin-up, on a real local Prefect server and the sandbox.

Nothing is left to report the run: not the flow process, not `serve()`, no hook. Two legs run side
by side in one sandbox (two stacks, two clusters) to share the real-time heartbeat wait:

- the crash chain: a spin-up of the `serve-llm/spin-up` deployment under `python -m deployments.serve`;
  the runner's whole process tree is killed during the model load and a fresh runner is started (what
  a supervisor does). The zombie automation of `python -m deployments.setup` must mark the run Crashed,
  and its Crashed event must start `teardown-llm/after-crash`, which tears the stack down.
- the janitor: a spin-up started from the command line (`python -m flows up`), killed the same way.
  The crash chain does not cover it (its trigger matches spin-up deployment runs only) and no process
  comes back; the `llm-janitor` flow run afterwards reclaims the GPU pool because the run named in
  its labels is Crashed.

Beside them runs a healthy flow that is not ours, with Prefect's default 180 s heartbeats: the zombie
automation must leave it alone (a shared server hosts other teams' flows; their heartbeat periods are
not ours to know, and our 60 s window would mark their healthy runs Crashed).

Wall time is bounded by Prefect: heartbeats every 30 s at least, a zombie window of two of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Cancelled

from bench.measure import duplicates
from blocks.prefect_blocks import ServingStackBlock
from blocks.spec import StackSpec
from deployments.setup import MIN_WINDOW_HEARTBEATS, ZOMBIE_AUTOMATION, zombie_automation
from flows.demo import demo_stack_file, still_billing
from flows.janitor import janitor
from flows.locks import stack_lock
from flows.stack_ref import StackRef
from sandbox.app import Sandbox
from sandbox.hooks import ClusterRef
from tasks.clock import TIME_SCALE_ENV
from tests.e2e._served import (
    ROOT,
    delete_deployments,
    deployment_id,
    events,
    final_state,
    has_deployment,
    kill_runner,
    read_run,
    run_logs,
    run_processes,
    runs_of,
    serving,
    wait_for,
)

pytestmark = pytest.mark.slow

TIME_SCALE = 200.0
HEARTBEAT_S = 30                               # Prefect 3.9's minimum (flows.heartbeat_frequency, ge=30)
WINDOW_S = MIN_WINDOW_HEARTBEATS * HEARTBEAT_S  # the shortest zombie window deployments.setup accepts
# The last heartbeat may come up to one period before the kill; proactive triggers are evaluated
# every 5 s; a loaded machine adds its share.
CRASHED_WITHIN_S = WINDOW_S + 45
SPIN_UP, SPIN_DOWN, AFTER_CRASH, SWEEP = ("serve-llm/spin-up", "teardown-llm/spin-down",
                                          "teardown-llm/after-crash", "llm-janitor/sweep")
SERVED = (SPIN_UP, SPIN_DOWN, AFTER_CRASH, "redeploy-llm/on-change", SWEEP)


@dataclass
class Killed:
    sandbox: Sandbox
    block_name: str
    chain_spec: StackSpec             # leg 1: the served stack (saved block)
    janitor_stack: StackRef           # leg 2: the command-line stack (a file)
    janitor_spec: StackSpec
    served_run: FlowRun               # the deployment's spin-up run, as it was when killed
    cli_run: FlowRun                  # the command-line spin-up run, as it was when killed
    foreign_run: FlowRun              # a healthy run of a flow that is not ours
    foreign: subprocess.Popen         # its process
    automation_at: datetime           # when deployments.setup created the zombie automation
    killed_at: dict[str, datetime]    # leg -> when its processes were killed
    runner: subprocess.Popen          # the fresh runner
    runner_log: Path


def _spec_file(sandbox: Sandbox, folder: Path, *, name: str | None = None) -> Path:
    path = demo_stack_file(sandbox.gke_url, folder)
    if name:
        data = yaml.safe_load(path.read_text())
        data["name"], data["cluster"]["name"] = name, f"{name}-cluster"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _loading(sandbox: Sandbox, spec: StackSpec) -> bool:
    """True while the stack's spin-up waits for the model: its RayService exists, its GPU pool bills."""
    if f"{spec.cluster.name}/{spec.gpu_pool.name}" not in still_billing(sandbox.inventory()):
        return False
    kube = sandbox.hooks.get(ClusterRef(spec.cluster.project, spec.cluster.location, spec.cluster.name))
    return kube is not None and bool(kube.ctx.store.list(("ray.io", "rayservices"))[0])


def _cli_run(stack_file: Path) -> FlowRun | None:
    """The serve-llm run the command line started for `stack_file` (it has no deployment)."""
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(is_null_=True)))
    return next((r for r in found if (r.parameters.get("stack") or {}).get("file") == str(stack_file)), None)


# Someone else's flow on the same server, healthy, with Prefect's default heartbeat period.
FOREIGN_FLOW = "someone-elses-flow"
FOREIGN_SCRIPT = f"""
import time
from prefect import flow

@flow(name={FOREIGN_FLOW!r})
def theirs():
    time.sleep(600)

theirs()
"""


def _foreign_run() -> FlowRun | None:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FOREIGN_FLOW])))
    return next((r for r in found if r.state_type.value == "RUNNING"), None)


def _setup(env: dict[str, str]) -> str:
    """`python -m deployments.setup` with the shortest window it accepts; return its output."""
    done = subprocess.run([sys.executable, "-m", "deployments.setup", "--zombie-after-s", str(WINDOW_S)],
                          env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kill_both(sandbox, runner, cli, *, served_id, chain_spec, janitor_spec) -> dict[str, datetime]:
    """Kill each leg's processes as soon as its spin-up waits for the model (whichever comes first)."""
    killed: dict[str, datetime] = {}
    deadline = time.monotonic() + 180
    while len(killed) < 2 and time.monotonic() < deadline:
        if "chain" not in killed and _loading(sandbox, chain_spec):
            assert read_run(served_id).state_type.value == "RUNNING"
            kill_runner(runner)
            killed["chain"] = datetime.now(timezone.utc)
        if "janitor" not in killed and _loading(sandbox, janitor_spec):
            assert cli.poll() is None, f"the command-line spin-up ended early ({cli.returncode})"
            kill_runner(cli)
            killed["janitor"] = datetime.now(timezone.utc)
        time.sleep(0.2)
    assert set(killed) == {"chain", "janitor"}, f"only {sorted(killed)} reached the model load in time"
    return killed


def _start_foreign(env: dict[str, str], folder: Path) -> subprocess.Popen:
    """Start someone else's flow, with Prefect's default heartbeat period (not ours)."""
    theirs = {k: v for k, v in env.items() if k != "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}
    return subprocess.Popen([sys.executable, "-c", FOREIGN_SCRIPT], env=theirs, cwd=str(folder),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _start_cli_spin_up(env: dict[str, str], stack_file: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows", "up", "--stack", str(stack_file)], env=env,
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _spin_up_served_then_kill(sandbox: Sandbox, block: ServingStackBlock, block_name: str, env: dict[str, str],
                              folder: Path, cli_file: Path) -> tuple[FlowRun, dict[str, datetime]]:
    """Serve the block's deployments, start both legs' spin-ups, kill each leg in its model load."""
    log = folder / "serve-1.log"
    with serving(["--block", block_name], env, log) as first:
        wait_for("the served deployments", lambda: all(has_deployment(n) for n in (SPIN_UP, AFTER_CRASH)),
                 timeout_s=120, alive=first, log=log)
        # Slow weights keep both spin-ups in the model load long enough to be caught there.
        sandbox.inject({"kind": "slow_download", "model_id": "deepseek", "factor": 2})
        with get_client(sync_client=True) as client:
            served_id = client.create_flow_run_from_deployment(deployment_id(SPIN_UP)).id
        cli = _start_cli_spin_up(env, cli_file)
        try:
            killed_at = _kill_both(sandbox, first, cli, served_id=served_id, chain_spec=block.spec,
                                   janitor_spec=StackSpec.from_yaml(str(cli_file)))
        finally:
            if cli.poll() is None:
                os.killpg(cli.pid, signal.SIGKILL)
    assert run_processes(served_id) == []               # nothing of the run survived
    return read_run(served_id), killed_at


@pytest.fixture(scope="module")
def killed(prefect_server, tmp_path_factory) -> Iterator[Killed]:
    """Both legs' spin-ups killed with every process of theirs, and a fresh runner serving again."""
    started, folder = time.monotonic(), tmp_path_factory.mktemp("runner-killed")
    (folder / "cli").mkdir()
    with Sandbox(time_scale=TIME_SCALE, kubernetes=True) as sandbox:
        env = dict(prefect_server, PYTHONPATH=str(ROOT), PREFECT_RUNNER_POLL_FREQUENCY="2",
                   PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S), **{TIME_SCALE_ENV: sandbox.flows_clock_env()})
        block, block_name = ServingStackBlock.from_yaml(_spec_file(sandbox, folder)), f"killed-{uuid.uuid4().hex[:8]}"
        block.save(block_name)
        cli_file = _spec_file(sandbox, folder / "cli", name="janitor-leg")
        foreign = None
        try:
            automation_at = datetime.now(timezone.utc)
            _setup(env)
            foreign = _start_foreign(env, folder)
            served_run, killed_at = _spin_up_served_then_kill(sandbox, block, block_name, env, folder, cli_file)
            foreign_run, cli_run = wait_for("the foreign flow's run", _foreign_run, timeout_s=30), _cli_run(cli_file)
            assert cli_run is not None, "the command-line spin-up left no flow run"
            with serving(["--block", block_name], env, folder / "serve-2.log") as second:
                yield Killed(sandbox, block_name, block.spec, StackRef(file=str(cli_file)),
                             StackSpec.from_yaml(str(cli_file)), served_run, cli_run, foreign_run, foreign,
                             automation_at, killed_at, second, folder / "serve-2.log")
        finally:
            if foreign is not None and foreign.poll() is None:
                os.killpg(foreign.pid, signal.SIGKILL)
            _forget(SERVED)
            print(f"\ntest_runner_killed: module wall time {time.monotonic() - started:.0f}s")


def _forget(deployments: tuple[str, ...]) -> None:
    """Remove what this module registered on the session's server: a 60 s zombie window would mark
    later modules' in-process runs of our flows (180 s heartbeats) Crashed. End the foreign run."""
    delete_deployments(*deployments)
    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(ZOMBIE_AUTOMATION):
            client.delete_automation(automation.id)
        if (foreign := _foreign_run()) is not None:
            client.set_flow_run_state(foreign.id, Cancelled(message="test_runner_killed: stopped"), force=True)


def _crashed_by_the_automation(run: FlowRun, killed_at: datetime, *, log: Path | None = None) -> FlowRun:
    assert run.state_type.value == "RUNNING", f"run {run.name} was {run.state_name} when killed"
    crashed = final_state(run.id, expect="CRASHED", timeout_s=CRASHED_WITHIN_S, log=log)
    assert crashed.state.message == zombie_automation(WINDOW_S, heartbeat_s=HEARTBEAT_S).actions[0].message
    assert crashed.state.timestamp >= killed_at
    return crashed


def _billing(sandbox: Sandbox, spec: StackSpec) -> bool:
    return f"{spec.cluster.name}/{spec.gpu_pool.name}" in still_billing(sandbox.inventory())


# -- tests ----------------------------------------------------------------------------------------

def test_the_zombie_automation_marks_the_run_crashed_and_the_crash_chain_tears_the_stack_down(killed):
    run = _crashed_by_the_automation(killed.served_run, killed.killed_at["chain"], log=killed.runner_log)
    assert _billing(killed.sandbox, killed.chain_spec)               # nobody else has taken it down

    after_run = f"prefect.flow-run.{run.id}"
    chain = wait_for("the after-crash teardown run", lambda: next(
        (r for r in runs_of(AFTER_CRASH) if r.parameters.get("after_run") == after_run), None),
        timeout_s=60, alive=killed.runner, log=killed.runner_log)
    chain = final_state(chain.id, expect="COMPLETED", timeout_s=120, alive=killed.runner, log=killed.runner_log)
    assert chain.created_by.type == "AUTOMATION"
    assert chain.parameters == {"stack": {"block_name": killed.block_name}, "after_run": after_run,
                                "reason": f"spin-up run {run.name} ended Crashed"}
    assert not _billing(killed.sandbox, killed.chain_spec)
    # The chain run deleted the pool itself: it did not find it gone.
    logs = wait_for("the chain run's logs", lambda: (text := run_logs(chain.id)) and "teardown of stack" in text
                    and text, timeout_s=30)
    assert "already gone" not in "\n".join(line for line in logs.splitlines() if "node pool" in line), logs
    # No other teardown ran for it: no sweep, no scheduled spin-down, one chain run.
    assert [r.id for r in runs_of(AFTER_CRASH) if r.created >= killed.killed_at["chain"]] == [chain.id]
    assert [r for r in runs_of(SWEEP) + runs_of(SPIN_DOWN) if r.start_time] == []


def test_a_killed_run_the_chain_does_not_cover_is_reclaimed_by_the_janitor(killed):
    run = _crashed_by_the_automation(killed.cli_run, killed.killed_at["janitor"])
    assert _billing(killed.sandbox, killed.janitor_spec)             # the chain did not take it down
    assert [r for r in runs_of(AFTER_CRASH) if r.parameters.get("after_run") == f"prefect.flow-run.{run.id}"] == []

    # This process runs our flow too: it must heartbeat within the window like every runner.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_S}):
        swept = janitor(stacks=[killed.janitor_stack])
    findings = {f["cluster"]: (f["action"], f["reason"]) for f in swept["findings"]}
    assert findings[killed.janitor_spec.cluster.name] == ("reclaimed", "its spin-up run ended CRASHED")
    assert findings[killed.chain_spec.cluster.name][0] == "left alone"      # another stack: not touched
    assert not _billing(killed.sandbox, killed.janitor_spec)


def test_a_healthy_run_of_a_flow_that_is_not_ours_is_never_marked_crashed(killed, prefect_server):
    run = killed.foreign_run
    heartbeats = events(prefect_server["PREFECT_API_URL"], "prefect.flow-run.heartbeat",
                        since=killed.automation_at, resource_id=f"prefect.flow-run.{run.id}")
    assert heartbeats, "the foreign run sent no heartbeat the automation could have seen"
    # Its next heartbeat is 180 s away: past this point, our runs were Crashed long ago.
    first = min(datetime.fromisoformat(e["occurred"]) for e in heartbeats)
    time.sleep(max(0.0, (first - datetime.now(timezone.utc)).total_seconds() + CRASHED_WITHIN_S - 25))
    assert killed.foreign.poll() is None, "the foreign flow's process ended"
    assert read_run(run.id).state_type.value == "RUNNING"


def test_a_spin_down_whose_process_dies_is_run_again_by_the_after_crash_deployment(killed):
    with get_client(sync_client=True) as client:
        up = client.create_flow_run_from_deployment(deployment_id(SPIN_UP)).id
    final_state(up, expect="COMPLETED", timeout_s=180, alive=killed.runner, log=killed.runner_log)
    assert _billing(killed.sandbox, killed.chain_spec)

    # Held here as by another lifecycle run of the stack: the spin-down waits for it, so its process
    # is killed before it tore anything down, and the rerun waits for it too.
    with stack_lock(killed.chain_spec.name, timeout_s=30):
        with get_client(sync_client=True) as client:
            down = client.create_flow_run_from_deployment(deployment_id(SPIN_DOWN)).id
        wait_for("the spin-down waiting for the stack's lock", lambda: read_run(down).state_type.value == "RUNNING",
                 timeout_s=60, alive=killed.runner, log=killed.runner_log)
        pids = wait_for("the spin-down's process", lambda: run_processes(down), timeout_s=30)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        crashed = final_state(down, expect="CRASHED", timeout_s=60, alive=killed.runner, log=killed.runner_log)
        reason = f"spin-down run {crashed.name} ended Crashed"
        rerun = wait_for("the after-crash rerun", lambda: next(
            (r for r in runs_of(AFTER_CRASH) if r.parameters.get("reason") == reason), None),
            timeout_s=60, alive=killed.runner, log=killed.runner_log)
        assert _billing(killed.sandbox, killed.chain_spec)           # nothing was torn down yet
    rerun = final_state(rerun.id, expect="COMPLETED", timeout_s=120, alive=killed.runner, log=killed.runner_log)
    assert rerun.created_by.type == "AUTOMATION"
    assert rerun.parameters == {"stack": {"block_name": killed.block_name}, "delete_cluster_too": None,
                                "reason": reason}
    assert not _billing(killed.sandbox, killed.chain_spec)


def test_the_sandbox_ends_with_nothing_billing_and_nothing_duplicated(killed):
    """After both legs (this module's order): no GPU node bills, no resource was created twice."""
    inventory = killed.sandbox.inventory()
    assert still_billing(inventory) == []
    requests = killed.sandbox.requests()
    assert duplicates(requests, inventory, killed.chain_spec) == []
    assert duplicates(requests, inventory, killed.janitor_spec) == []
    assert sorted(c["name"] for c in inventory["clusters"]) == sorted(
        [killed.chain_spec.cluster.name, killed.janitor_spec.cluster.name])  # warm mode keeps both clusters

"""How each kind of scenario drives the lifecycle: in this process, in a killed child process, under a
`serve()` runner whose run is cancelled through the API, twice at once, or with a spin-down racing.

Every driver returns a `Trace`: whether the spin-up ended healthy, and when (simulated seconds) the
disturbance happened if the driver made it (kill, cancel); injected faults are timed by the sandbox.
"""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling, Crashed

from bench.processes import stop_process_group
from bench.scenarios import BOUNDARIES, Scenario
from blocks.spec import StackSpec
from flows.janitor import janitor
from flows.locks import lock_name
from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY_TIMEOUT_S = 240.0
RUN_TIMEOUT_S = 300.0


@dataclass
class Trace:
    healthy: bool = False                 # the spin-up ended Completed (validated)
    disturbed_s: float | None = None      # simulated second of the kill / cancel, if any
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    sandbox: object
    stack: StackRef
    spec: StackSpec
    env: dict[str, str]                   # environment for child processes (Prefect API, clock)


def wait_for(ctx: Context, boundary: str, *, proc: subprocess.Popen | None = None) -> bool:
    """Poll the sandbox until the run crosses `boundary`; False if it never does (or `proc` ended)."""
    check, deadline = BOUNDARIES[boundary], time.monotonic() + BOUNDARY_TIMEOUT_S
    while time.monotonic() < deadline:
        if check(ctx.sandbox, ctx.spec):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def up_then_down(ctx: Context, trace: Trace) -> Trace:
    """Spin up in this process; when it is healthy, spin down (the lifecycle's scheduled end)."""
    state = serve_llm(stack=ctx.stack, return_state=True)
    trace.healthy = state.is_completed()
    if not trace.healthy:
        trace.notes.append(f"spin-up {state.type.value}: {_first_line(state.message)}")
        return trace
    down = teardown_llm(stack=ctx.stack, reason="bench: lifecycle end", return_state=True)
    if not down.is_completed():
        trace.notes.append(f"spin-down {down.type.value}: {_first_line(down.message)}")
    return trace


def inline(sc: Scenario, ctx: Context) -> Trace:
    return up_then_down(ctx, Trace())


def kill(sc: Scenario, ctx: Context) -> Trace:
    """SIGKILL the process running the flow at the boundary, then rerun, or leave it to the janitor."""
    trace = Trace()
    if sc.phase == "down":
        up = serve_llm(stack=ctx.stack, return_state=True)
        trace.healthy = up.is_completed()
    command = ["up"] if sc.phase == "up" else ["down"]
    proc = subprocess.Popen([sys.executable, "-m", "flows", *command, "--stack", ctx.stack.file], cwd=ROOT,
                            env=ctx.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    crossed = wait_for(ctx, sc.at, proc=proc)
    trace.disturbed_s = ctx.sandbox.clock.elapsed_s()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not crossed:
        trace.notes.append(f"boundary {sc.at} not seen before the child ended ({proc.returncode})")
    dead = _running_runs("serve-llm" if sc.phase == "up" else "teardown-llm")
    free_stack_lock(ctx.spec.name)           # what the 60 s slot lease does, without waiting for it
    if sc.recovery == "janitor":
        # The zombie automation's window (minutes) outlasts the lease: the sweep after it finds the
        # stack's lock free and the run Crashed. (A sweep within the lease finds the stack busy.)
        _mark_crashed(dead)                   # what the heartbeat automation does for a dead host
        janitor(stacks=[ctx.stack])
        return trace
    if sc.phase == "up":
        return up_then_down(ctx, trace)
    down = teardown_llm(stack=ctx.stack, reason="bench: rerun after kill", return_state=True)
    if not down.is_completed():
        trace.notes.append(f"rerun of spin-down {down.type.value}: {_first_line(down.message)}")
    return trace


def twice(sc: Scenario, ctx: Context) -> Trace:
    """Two spin-ups of the stack at once (threads), then one spin-down."""
    states: list = []
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(
        lambda: states.append(serve_llm(stack=ctx.stack, return_state=True)),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_TIMEOUT_S)
    trace = Trace(healthy=len(states) == 2 and all(s.is_completed() for s in states))
    trace.notes.append("runs: " + ", ".join(s.type.value for s in states))
    teardown_llm(stack=ctx.stack, reason="bench: lifecycle end", return_state=True)
    return trace


def down_during_up(sc: Scenario, ctx: Context) -> Trace:
    """Start a spin-down while the spin-up is at `sc.at`: it must wait for the stack lock, then tear down."""
    states: dict[str, object] = {}
    up = threading.Thread(target=contextvars.copy_context().run, args=(
        lambda: states.__setitem__("up", serve_llm(stack=ctx.stack, return_state=True)),))
    up.start()
    trace = Trace()
    if not wait_for(ctx, sc.at):
        trace.notes.append(f"boundary {sc.at} not seen")
    trace.disturbed_s = ctx.sandbox.clock.elapsed_s()
    down = teardown_llm(stack=ctx.stack, reason="bench: spin-down during spin-up", return_state=True)
    up.join(RUN_TIMEOUT_S)
    trace.healthy = bool(states.get("up") and states["up"].is_completed())
    trace.notes.append(f"up {getattr(states.get('up'), 'type', None)}, down {down.type.value}")
    trace.disturbed_s = None                  # the spin-down is a request, not a fault: no delay figure
    return trace


def _running_runs(flow_name: str) -> list[UUID]:
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
    return [r.id for r in runs if flows.get(r.flow_id) == flow_name]


def _mark_crashed(run_ids: list[UUID]) -> None:
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            client.set_flow_run_state(run_id, Crashed(message="bench: host killed"), force=True)


def free_stack_lock(stack: str) -> None:
    """Release every slot of the stack's lock (held by a killed run until its lease ends). Idempotent."""
    from flows.locks import ensure_stack_limit

    ensure_stack_limit(stack)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(lock_name(stack), GlobalConcurrencyLimitUpdate(active_slots=0))


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else ""


def cancel(sc: Scenario, ctx: Context) -> Trace:
    """Run the spin-up under a `serve()` runner, cancel it from the API at `sc.at`; the runner's
    on_cancellation hook must tear down."""
    from bench.runner import DEPLOYMENT, FLOW

    trace = Trace()
    env = dict(ctx.env, PREFECT_RUNNER_POLL_FREQUENCY="1")
    # A name of its own: an earlier scenario's deployment (another stack file) must not be the one found.
    name = f"{DEPLOYMENT}-{uuid4().hex[:8]}"
    runner = subprocess.Popen([sys.executable, "-m", "bench.runner", ctx.stack.file, name], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            deployment = _wait_deployment(client, f"{FLOW}/{name}", runner)
            run = client.create_flow_run_from_deployment(deployment.id)
            if not wait_for(ctx, sc.at, proc=runner):
                trace.notes.append(f"boundary {sc.at} not seen")
            trace.disturbed_s = ctx.sandbox.clock.elapsed_s()
            client.set_flow_run_state(run.id, Cancelling(message="bench: cancelled from the API"))
            final = _wait_final(client, run.id)
            trace.notes.append(f"run {final}")
            _wait_teardown_done(client, run.name)
    finally:
        stop_process_group(runner, grace_s=30)
    return trace


def _wait_deployment(client, name: str, runner: subprocess.Popen):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.poll() is None:
        try:
            return client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - not registered yet
            time.sleep(0.5)
    raise RuntimeError(f"the bench runner did not serve {name} (exit {runner.poll()})")


def _wait_final(client, run_id: UUID) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state and state.is_final():
            return state.type.value
        time.sleep(0.5)
    return "not final"


def _wait_teardown_done(client, run_name: str) -> None:
    """Wait for the teardown-llm run that the cancelled run's hook started (its reason names the run)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        flows = {f.id: f.name for f in client.read_flows()}
        runs = [r for r in client.read_flow_runs() if flows.get(r.flow_id) == "teardown-llm"
                and repr(run_name) in str(r.parameters.get("reason", ""))]
        if runs and all(r.state and r.state.is_final() for r in runs):
            return
        time.sleep(0.5)


DRIVERS = {"inline": inline, "kill": kill, "cancel": cancel, "twice": twice, "down-during-up": down_during_up}

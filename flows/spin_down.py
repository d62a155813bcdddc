"""`teardown_llm`: take the stack down (RayService, GPU pool, then the cluster if the policy says so).

Every step runs even when an earlier one fails, because the GPU pool is what bills: a RayService we
cannot reach must not keep two A3 nodes alive. Each delete treats NotFound as done and waits for its
operation. Resources without our owner labels for this stack are refused, never deleted.
`tear_down_after` is the state hook that turns a failed, cancelled or crashed spin-up into a teardown.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field, StrictBool, StringConstraints

from blocks.errors import GkeLlmFlowsError, PermanentError
from flows.connections import Connections
from flows.locks import stack_lock
from flows.stack_ref import StackRef, load_stack
from tasks.clock import Clock, clock_from_env
from tasks.cluster import delete_cluster
from tasks.node_pool import delete_gpu_node_pool
from tasks.ray_service import delete_ray_service
from tasks.weights_prefetch import delete_weights_prefetch

LOCK_TIMEOUT_S = 3 * 3600
# Constraints go in the type: Prefect drops those of a `Field(...)` default from the parameter schema
# and does not check them, so `Field("x", max_length=500)` would accept anything.
Reason = Annotated[str, StringConstraints(max_length=500)]
# The spin-up run a crash-chain teardown follows: its id, or its event resource id.
RunRef = Annotated[str, StringConstraints(pattern=r"^(prefect\.flow-run\.)?[0-9a-fA-F-]{36}$")]


class TeardownIncomplete(PermanentError):
    """At least one teardown step failed; the others still ran. Lists every failure."""


@flow(name="teardown-llm")
def teardown_llm(stack: StackRef,
                 delete_cluster_too: StrictBool | None = Field(
                     None, description="also delete the cluster; None = the stack's lifecycle policy"),
                 reason: Reason = Field("requested", description="why, for the log (at most 500 characters)"),
                 after_run: RunRef | None = Field(
                     None, description="the failed spin-up run this teardown follows (its keep settings apply)"),
                 ) -> dict[str, Any]:
    """Tear the stack down. Idempotent: safe when nothing exists. Raises TeardownIncomplete
    (after trying every step) when a step failed, NotOursError among them for foreign resources.

    With `after_run` (the crash chain), nothing is torn down when that run or the stack's policy
    asked to keep the stack for debugging, exactly as the spin-up's own hook decides."""
    loaded, clock = load_stack(stack), clock_from_env()
    spec, log = loaded.spec, get_run_logger()
    if after_run and (keep := keep_reason(_run_parameters(after_run), spec)):
        log.warning("stack %r kept after run %s: %s; it keeps billing until torn down", spec.name, after_run, keep)
        return {"stack": spec.name, "kept": keep}
    with_cluster = spec.lifecycle.delete_cluster_on_teardown if delete_cluster_too is None else delete_cluster_too
    log.info("teardown of stack %r (%s): %s", spec.name, stack.describe(), reason)
    with stack_lock(spec.name, timeout_s=LOCK_TIMEOUT_S):
        return tear_down(Connections(loaded, clock), clock=clock, delete_cluster_too=with_cluster)


def tear_down(conn: Connections, *, clock: Clock, delete_cluster_too: bool) -> dict[str, Any]:
    """Run every teardown step in order; return what each did, or raise listing every failure."""
    spec, done, failures = conn.stack.spec, {}, []

    def step(name: str, action) -> None:
        try:
            done[name] = action()
        except GkeLlmFlowsError as e:
            done[name] = f"failed: {type(e).__name__}"
            failures.append(f"{name}: {e}")

    step("ray_service_deleted", lambda: _delete_ray_service(conn, clock))
    step("weights_prefetch_deleted", lambda: _delete_weights_prefetch(conn))
    step("gpu_node_pool_deleted", lambda: delete_gpu_node_pool(conn.gke, spec, clock=clock))
    if delete_cluster_too:
        step("cluster_deleted", lambda: delete_cluster(conn.gke, spec, clock=clock))
    if failures:
        raise TeardownIncomplete(f"teardown of stack {spec.name!r} incomplete:\n" +
                                 "\n".join(f"  - {f}" for f in failures))
    return {"stack": spec.name, **done}


def _delete_ray_service(conn: Connections, clock: Clock) -> bool:
    kube = conn.kube()
    if kube is None:
        return False  # no cluster (or no endpoint): nothing inside it to delete
    return delete_ray_service(kube, conn.stack.spec, clock=clock)


def _delete_weights_prefetch(conn: Connections) -> bool:
    kube = conn.kube()
    return False if kube is None else delete_weights_prefetch(kube, conn.stack.spec)


def keep_reason(run_parameters: dict[str, Any], spec) -> str | None:
    """Why a failed spin-up's stack is kept instead of torn down, or None to tear it down (pure)."""
    if run_parameters.get("keep_on_failure"):
        return "the run set keep_on_failure"
    if spec.lifecycle.keep_for_debugging:
        return "lifecycle.keep_for_debugging is on"
    if not spec.lifecycle.teardown_on_failure:
        return "lifecycle.teardown_on_failure is off"
    return None


def _run_parameters(run_ref: str) -> dict[str, Any]:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_flow_run(UUID(run_ref.rsplit(".", 1)[-1])).parameters or {})


def tear_down_after(flow, flow_run, state) -> None:
    """State hook for a failed, cancelled or crashed spin-up: run `teardown_llm` unless told to keep.

    Runs in the flow's process on failure and possibly in another process on cancellation or crash,
    so it rebuilds everything from the run's parameters. Its own failure is logged, never raised:
    the run's original error stays the one reported.
    """
    log = _hook_logger()
    params = dict(flow_run.parameters or {})
    try:
        spec = load_stack(params["stack"]).spec
        if keep := keep_reason(params, spec):
            log.warning("stack %r kept after %s (%s): it keeps billing until torn down", spec.name, state.name, keep)
            return
        teardown_llm(stack=params["stack"], reason=f"spin-up run {flow_run.name!r} ended {state.name}")
    except Exception:  # noqa: BLE001 - a hook must not mask the run's own error; the janitor is next
        log.exception("teardown after %s of run %r failed; the janitor will retry", state.name, flow_run.name)


def _hook_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context (e.g. another process): plain logging
        return logging.getLogger("gke_llm_flows.teardown")

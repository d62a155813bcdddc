"""`serve_llm`: bring the stack up, prove it answers, and report; tear down on any failure.

Order: cluster, then the GPU pool in parallel with the KubeRay operator, the RayService and the
weights-prefetch DaemonSet (pods wait for the GPU nodes, so nothing waits for the pool that does not
need it; the prefetch copies the weights onto each GPU node while its GPU driver installs), then the
model load, then one real chat completion. Failure, cancellation and crash all lead to `teardown_llm` (see
`flows.spin_down.tear_down_after`), unless the policy or `keep_on_failure` says to keep it.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_first
from dataclasses import replace
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.runtime import flow_run as current_run
from pydantic import Field, StrictBool

from blocks.errors import GkeLlmFlowsError, RolloutFailed
from flows.connections import Connections
from flows.locks import stack_lock
from flows.spin_down import keep_reason, tear_down_after
from flows.stack_ref import LoadedStack, StackRef, load_stack
from flows.summary import estimate_cost, spin_up_summary
from flows.timeline import Timeline
from tasks.capacity import CapacityResult, ensure_gpu_capacity
from tasks.clock import Clock, clock_from_env
from tasks.cluster import ensure_cluster
from tasks.kuberay_operator import ensure_kuberay_operator
from tasks.ray_service import delete_ray_service, ensure_ray_service
from tasks.ray_service_wait import PhaseBudgets, WaitSettings, wait_for_ray_service_ready
from tasks.validate_endpoint import ValidationReport, validate_llm_endpoint
from tasks.weights_prefetch import ensure_weights_prefetch, read_weights_prefetch

# Longest gap between two looks of the load wait (seconds of the driven world). Pod-level fatal signs
# (an ImagePullBackOff) do not touch the RayService the wait watches, so only a look finds them: 20 s
# instead of the wait's default 30 s cuts the worst reaction by 10 s for ~1.5x the reads (a look is
# 4 lists, so about 12 requests a minute).
LOAD_LOOK_INTERVAL_S = 20.0
# How long a spin-up waits (wall seconds) for another lifecycle run of the same stack to finish.
LOCK_TIMEOUT_S = 3 * 3600
# In the type, not in a Field default: Prefect enforces (and publishes) only the type's constraints.
LeaseSeconds = Annotated[int, Field(strict=True, gt=0, le=30 * 24 * 3600)]


@flow(name="serve-llm", on_failure=[tear_down_after], on_cancellation=[tear_down_after],
      on_crashed=[tear_down_after])
def serve_llm(stack: StackRef,
              keep_on_failure: StrictBool = Field(
                  False, description="on failure keep what was created, for debugging (it keeps billing)"),
              lease_s: LeaseSeconds | None = Field(
                  None, description="seconds the janitor lets this spin-up live; None = the stack's "
                                    "lifecycle.lease_s (the weekday schedule passes its working day)"),
              ) -> dict[str, Any]:
    """Spin up the stack's LLM endpoint and validate it. Idempotent: a rerun converges.

    Returns a summary (endpoint, answer, timeline, cost). Raises the first failure's error after
    the teardown hook has run; the run ends Failed with that original error. A `lease_s` shorter
    than a spin-up may take is refused (SpecError naming lifecycle.lease_s) before anything is created.
    """
    loaded, clock = load_stack(stack), clock_from_env()
    if lease_s is not None:
        loaded = replace(loaded, spec=loaded.spec.updated({"lifecycle": {"lease_s": lease_s}}))
    spec = loaded.spec
    timeline = Timeline(clock)
    run_id = str(current_run.id) if current_run.id else None
    lease_expiry = int(clock.time() + spec.lifecycle.lease_s)
    get_run_logger().info("spin-up of stack %r (%s); lease until %d", spec.name, stack.describe(), lease_expiry)
    keep = keep_reason({"keep_on_failure": keep_on_failure}, spec) is not None   # the failure hook's rule
    with stack_lock(spec.name, timeout_s=LOCK_TIMEOUT_S):
        return spin_up(Connections(loaded, clock), loaded, timeline, clock=clock,
                       lease_expiry=lease_expiry, run_id=run_id, keep_on_failure=keep)


def spin_up(conn: Connections, loaded: LoadedStack, timeline: Timeline, *, clock: Clock,
            lease_expiry: int, run_id: str | None, keep_on_failure: bool = False) -> dict[str, Any]:
    """The spin-up steps, in order and overlapped; returns the summary dict."""
    spec, labels = loaded.spec, {"lease_expiry_epoch_s": lease_expiry, "run_id": run_id}
    with timeline.phase("cluster"):
        ensure_cluster(conn.gke, spec, clock=clock, **labels)   # DriftError: a kept cluster lacks Workload Identity
    kube = conn.kube()
    pool_started = clock.time()
    pool = ensure_gpu_capacity.submit(conn.gke, spec, clock=clock, **labels)
    load = None
    try:
        with timeline.phase("kuberay-operator"):
            ensure_kuberay_operator(kube, spec, clock=clock)
        with timeline.phase("ray-service"):
            ensure_ray_service(kube, spec, hf_token=loaded.hf_token, clock=clock, **labels)
        with timeline.phase("weights-prefetch"):
            # Applied before the GPU nodes exist: each node's copy starts the moment it registers.
            ensure_weights_prefetch(kube, spec, hf_token=loaded.hf_token is not None)
        load_started = clock.time()
        # Watch the load while the pool is still being created: a fatal sign on the CPU node (the
        # head's ImagePullBackOff, say) then fails the run in about a minute, not after the pool's ~10.
        load = wait_for_ray_service_ready.submit(kube, spec, clock=clock, settings=_load_settings(spec),
                                                 capacity_coming=lambda: not _done(pool))
        stopped = _stop_early_on_a_fatal_sign(load, pool, kube, spec, clock=clock, keep=keep_on_failure)
    finally:
        # Never leave the pool's creation running unobserved: teardown after a failure here must
        # find the pool settled, not racing a create that could still succeed behind its back.
        wait([pool])
    capacity: CapacityResult = pool.result()
    timeline.record("gpu-node-pool", pool_started, outcome="ok")
    try:
        load.result()
    except RolloutFailed:
        if not stopped:
            _stop_ray_service(kube, spec, clock=clock, keep=keep_on_failure)
        raise
    finally:
        timeline.record("model-load", load_started, outcome="ok" if _done(load) and load.state.is_completed()
                        else "failed")
    with timeline.phase("validation"):
        report: ValidationReport = validate_llm_endpoint(kube, spec, clock=clock)
    return _summarize(spec=loaded.spec, timeline=timeline, report=report, capacity=capacity,
                      pool_started=pool_started, clock=clock, prefetch=_prefetch_record(kube, spec))


def _stop_early_on_a_fatal_sign(load, pool, kube, spec, *, clock: Clock, keep: bool) -> bool:
    """While the pool is being created, return as soon as the load wait fails, after stopping the
    RayService (`_stop_ray_service`); True when it did. The pool is deleted by the teardown once its
    create settles (GKE refuses a delete before). Wakes on whichever finishes first: no polling."""
    wait_first([load.wrapped_future, pool.wrapped_future], return_when=FIRST_COMPLETED)
    if not _done(load):
        return False
    load.wait()                                  # the final state, now local (no API read)
    if load.state.is_completed():
        return False
    get_run_logger().error("fatal sign while the GPU pool is being created: %s", load.state.message)
    _stop_ray_service(kube, spec, clock=clock, keep=keep)
    return True


def _stop_ray_service(kube, spec, *, clock: Clock, keep: bool) -> None:
    """After a fatal sign, delete the RayService at once unless the stack is to be kept: the teardown's
    first step, taken here because the failure hook starts a new flow run, seconds later."""
    if not keep:
        # Called directly, not as a task run: its bookkeeping would delay the delete by seconds.
        delete_ray_service.fn(kube, spec, clock=clock)


def _load_settings(spec) -> WaitSettings:
    """The load wait now also spans the pool's creation: its deadline and GPU-node budget grow by the
    pool's own timeout, so a slow (but healthy) A3 pool is judged as before."""
    pool_s = spec.timeouts.node_pool_create_s
    return WaitSettings(timeout_s=spec.timeouts.model_load_s + pool_s, look_interval_s=LOAD_LOOK_INTERVAL_S,
                        budgets=PhaseBudgets(gpu_nodes_s=PhaseBudgets().gpu_nodes_s + pool_s))


def _done(future) -> bool:
    """Whether a submitted task has finished, without an API call (its thread's future says so)."""
    return future.wrapped_future.done()


def _prefetch_record(kube, spec) -> dict[str, Any] | None:
    """The weights prefetch's record for the summary; a failed read must not fail a validated spin-up."""
    try:
        return read_weights_prefetch(kube, spec)
    except GkeLlmFlowsError as e:
        get_run_logger().warning("weights prefetch not read for the summary: %s", e)
        return None


def _summarize(*, spec, timeline: Timeline, report: ValidationReport, capacity: CapacityResult,
               pool_started: float, clock: Clock, prefetch: dict[str, Any] | None) -> dict[str, Any]:
    cost = estimate_cost(spec, pool_started, clock.time())
    tokens_per_s = (report.completion_tokens / report.latency_s
                    if report.completion_tokens and report.latency_s else None)
    markdown = spin_up_summary(spec, timeline, endpoint=report.url, answer=report.answer,
                               latency_s=report.latency_s, tokens_per_s=tokens_per_s, cost=cost,
                               placement=str(capacity.placement), prefetch=prefetch)
    create_markdown_artifact(key=f"{spec.name}-spin-up", markdown=markdown,
                             description=f"spin-up summary of stack {spec.name}")
    return {"stack": spec.name, "endpoint": report.url, "model": spec.serving.model_id,
            "answer": report.answer, "latency_s": report.latency_s, "tokens_per_s": tokens_per_s,
            "placement": str(capacity.placement), "ready_after_s": round(timeline.elapsed_s(), 1),
            "started_at_s": round(timeline.started_s, 3),
            "gpu_node_hours": round(cost.gpu_node_hours, 3), "estimated_cost_usd": round(cost.usd, 2),
            "weights_prefetch": prefetch, "timeline": timeline.as_rows(), "summary_markdown": markdown}

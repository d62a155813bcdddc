"""`serve_llm`: bring the stack up, prove it answers, and report; tear down on any failure.

Order: cluster, then the GPU pool in parallel with the KubeRay operator and the RayService (pods wait
for the GPU nodes, so nothing waits for the pool that does not need it), then the model load, then one
real chat completion. Failure, cancellation and crash all lead to `teardown_llm` (see
`flows.spin_down.tear_down_after`), unless the policy or `keep_on_failure` says to keep it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.runtime import flow_run as current_run
from pydantic import Field

from flows.connections import Connections
from flows.locks import stack_lock
from flows.spin_down import tear_down_after
from flows.stack_ref import LoadedStack, StackRef, load_stack
from flows.summary import estimate_cost, spin_up_summary
from flows.timeline import Timeline
from tasks.capacity import CapacityResult, ensure_gpu_capacity
from tasks.clock import Clock, clock_from_env
from tasks.cluster import ensure_cluster
from tasks.kuberay_operator import ensure_kuberay_operator
from tasks.ray_service import ensure_ray_service
from tasks.ray_service_wait import wait_for_ray_service_ready
from tasks.validate_endpoint import ValidationReport, validate_llm_endpoint

# How long a spin-up waits (wall seconds) for another lifecycle run of the same stack to finish.
LOCK_TIMEOUT_S = 3 * 3600


@flow(name="serve-llm", on_failure=[tear_down_after], on_cancellation=[tear_down_after],
      on_crashed=[tear_down_after])
def serve_llm(stack: StackRef,
              keep_on_failure: bool = Field(
                  False, description="on failure keep what was created, for debugging (it keeps billing)"),
              ) -> dict[str, Any]:
    """Spin up the stack's LLM endpoint and validate it. Idempotent: a rerun converges.

    Returns a summary (endpoint, answer, timeline, cost). Raises the first failure's error after
    the teardown hook has run; the run ends Failed with that original error.
    """
    loaded, clock = load_stack(stack), clock_from_env()
    spec = loaded.spec
    timeline = Timeline(clock)
    run_id = str(current_run.id) if current_run.id else None
    lease_expiry = int(clock.time() + spec.lifecycle.lease_s)
    get_run_logger().info("spin-up of stack %r (%s); lease until %d", spec.name, stack.describe(), lease_expiry)
    with stack_lock(spec.name, timeout_s=LOCK_TIMEOUT_S):
        return spin_up(Connections(loaded, clock), loaded, timeline, clock=clock,
                       lease_expiry=lease_expiry, run_id=run_id)


def spin_up(conn: Connections, loaded: LoadedStack, timeline: Timeline, *, clock: Clock,
            lease_expiry: int, run_id: str | None) -> dict[str, Any]:
    """The spin-up steps, in order and overlapped; returns the summary dict."""
    spec, labels = loaded.spec, {"lease_expiry_epoch_s": lease_expiry, "run_id": run_id}
    with timeline.phase("cluster"):
        ensure_cluster(conn.gke, spec, clock=clock, **labels)
    kube = conn.kube()
    pool_started = clock.time()
    pool = ensure_gpu_capacity.submit(conn.gke, spec, clock=clock, **labels)
    try:
        with timeline.phase("kuberay-operator"):
            ensure_kuberay_operator(kube, spec, clock=clock)
        with timeline.phase("ray-service"):
            ensure_ray_service(kube, spec, hf_token=loaded.hf_token, clock=clock, **labels)
    finally:
        # Never leave the pool's creation running unobserved: teardown after a failure here must
        # find the pool settled, not racing a create that could still succeed behind its back.
        wait([pool])
    capacity: CapacityResult = pool.result()
    timeline.record("gpu-node-pool", pool_started, outcome="ok")
    with timeline.phase("model-load"):
        wait_for_ray_service_ready(kube, spec, clock=clock)
    with timeline.phase("validation"):
        report: ValidationReport = validate_llm_endpoint(kube, spec, clock=clock)
    return _summarize(spec=loaded.spec, timeline=timeline, report=report, capacity=capacity,
                      pool_started=pool_started, clock=clock)


def _summarize(*, spec, timeline: Timeline, report: ValidationReport, capacity: CapacityResult,
               pool_started: float, clock: Clock) -> dict[str, Any]:
    cost = estimate_cost(spec, pool_started, clock.time())
    tokens_per_s = (report.completion_tokens / report.latency_s
                    if report.completion_tokens and report.latency_s else None)
    markdown = spin_up_summary(spec, timeline, endpoint=report.url, answer=report.answer,
                               latency_s=report.latency_s, tokens_per_s=tokens_per_s, cost=cost,
                               placement=str(capacity.placement))
    create_markdown_artifact(key=f"{spec.name}-spin-up", markdown=markdown,
                             description=f"spin-up summary of stack {spec.name}")
    return {"stack": spec.name, "endpoint": report.url, "model": spec.serving.model_id,
            "answer": report.answer, "latency_s": report.latency_s, "tokens_per_s": tokens_per_s,
            "placement": str(capacity.placement), "ready_after_s": round(timeline.elapsed_s(), 1),
            "gpu_node_hours": round(cost.gpu_node_hours, 3), "estimated_cost_usd": round(cost.usd, 2),
            "timeline": timeline.as_rows(), "summary_markdown": markdown}

"""`stage_weights`: copy the stack's model from Hugging Face into its gs:// bucket once, in the cluster.

The stack names both ends: `serving.staged_from` (the Hugging Face repo) and `serving.model_source`
(`gs://BUCKET/PATH`, what the RayService then loads from). The copy is a Kubernetes Job on the CPU node
(`tasks/weights.py`): idempotent (a completed Job, or the `_STAGED` marker in the bucket, means
nothing to do), resumable (files already in the bucket are skipped) and logged as it goes. The cluster
is ensured first (CPU node only, no GPU is billed), so staging can run the day before a spin-up.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.connections import Connections
from flows.stack_ref import StackRef, load_stack
from tasks.clock import clock_from_env
from tasks.cluster import ensure_cluster
from tasks.weights import ensure_staging_job, wait_for_staging_job


@flow(name="stage-weights")
def stage_weights(stack: StackRef) -> dict[str, Any]:
    """Stage the weights; return {job, action, destination, detail}. Raises InvalidRequest when the
    stack has no gs:// model_source or no staged_from, RolloutFailed when the Job fails."""
    loaded, clock = load_stack(stack), clock_from_env()
    spec = loaded.spec
    log = get_run_logger()
    log.info("staging %s into %s (stack %r)", spec.serving.staged_from, spec.serving.model_source, spec.name)
    lease_expiry = int(clock.time() + spec.lifecycle.lease_s)
    conn = Connections(loaded, clock)
    # DriftError when a kept cluster lacks the Workload Identity the Job needs to write to the bucket.
    ensure_cluster(conn.gke, spec, clock=clock, lease_expiry_epoch_s=lease_expiry, run_id=None)
    kube = conn.kube()
    result = ensure_staging_job(kube, spec)
    detail = "nothing to do" if result.action == "already complete" else wait_for_staging_job(kube, spec, clock=clock)
    log.info("staging Job %s: %s (%s)", result.job, result.action, detail)
    return {"job": result.job, "action": result.action, "destination": result.destination, "detail": detail}

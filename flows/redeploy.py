"""`redeploy_llm`: apply a changed serving spec to a running stack, wait until the new version
serves, and validate it. A Serve-config-only change (e.g. a new model source) is applied in place by
KubeRay, so the old version keeps answering until the new one is RUNNING."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field, StringConstraints

from blocks.errors import PermanentError
from flows.connections import Connections
from flows.locks import stack_lock
from flows.spin_down import Reason
from flows.stack_ref import LoadedStack, StackRef, load_stack
from tasks.clock import clock_from_env
from tasks.ray_service import ensure_ray_service
from tasks.ray_service_wait import wait_for_ray_service_ready
from tasks.validate_endpoint import validate_llm_endpoint
from tasks.weights_prefetch import ensure_weights_prefetch

LOCK_TIMEOUT_S = 3 * 3600
# In the type, not in a Field default: Prefect enforces (and publishes) only the type's constraints.
ModelSource = Annotated[str, StringConstraints(min_length=1, max_length=1024,
                                               pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")]


@flow(name="redeploy-llm")
def redeploy_llm(stack: StackRef,
                 model_source: ModelSource | None = Field(
                     None, description="new model source (Hugging Face repo id or gs:// URI); None = the stack's"),
                 reason: Reason = Field("requested", description="why, for the log (at most 500 characters)"),
                 ) -> dict[str, Any]:
    """Bring the running stack's RayService to its (possibly changed) spec, wait, validate.

    Raises PermanentError when the stack is not running (spin it up first), DriftError when the
    change would need a second 16-GPU Ray cluster and the spec does not allow it.
    """
    loaded, clock = load_stack(stack), clock_from_env()
    spec = loaded.spec
    if model_source:
        spec = spec.updated({"serving": {"model_source": model_source}})
    log = get_run_logger()
    log.info("redeploy of stack %r (%s): %s", spec.name, stack.describe(), reason)
    with stack_lock(spec.name, timeout_s=LOCK_TIMEOUT_S):
        conn = Connections(LoadedStack(spec, loaded.gcp_credentials, loaded.hf_token), clock)
        kube = conn.kube()
        if kube is None:
            raise PermanentError(f"stack {spec.name!r}: cluster {spec.cluster.name!r} is not running; "
                                 "run serve-llm to spin it up instead of redeploying")
        applied = ensure_ray_service(kube, spec, hf_token=loaded.hf_token, clock=clock)
        # A new model is copied onto the GPU nodes' cache too; the workers share it (never waited for).
        ensure_weights_prefetch(kube, spec, hf_token=loaded.hf_token is not None)
        wait_for_ray_service_ready(kube, spec, clock=clock)
        report = validate_llm_endpoint(kube, spec, clock=clock)
    return {"stack": spec.name, "action": applied.action.value, "changed": applied.changed_paths,
            "model_source": spec.serving.model_source, "answer": report.answer}

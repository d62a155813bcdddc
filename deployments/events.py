"""The custom events our deployments react to, and a helper that emits them well-formed.

`gke-llm-flows.model.published` asks for a redeploy of one stack with a new model source:

    resource: {"prefect.resource.id": "gke-llm-flows.stack.<stack name>"}
    payload:  {"model_source": "<Hugging Face repo id or gs:// URI>"}     # required

The stack name is the spec's `name` (e.g. `deepseek-r1`), not a Block name. A missing
`model_source` starts no run (Prefect drops it; the only trace is a `prefect.automation.action.failed`
event); a value outside redeploy_llm's pattern is rejected when the run is created.
"""

from __future__ import annotations

import re

MODEL_PUBLISHED = "gke-llm-flows.model.published"
STACK_RESOURCE_PREFIX = "gke-llm-flows.stack."
# Mirrors redeploy_llm's `model_source` pattern: checked here so a bad event fails at the sender.
MODEL_SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,1023}$")


def stack_resource_id(stack_name: str) -> str:
    return f"{STACK_RESOURCE_PREFIX}{stack_name}"


def model_published_event(stack_name: str, model_source: str) -> dict:
    """Return the keyword arguments of `prefect.events.emit_event` for a published model.

    Raises ValueError naming the bad value when `model_source` would be rejected by redeploy_llm.
    """
    if not MODEL_SOURCE_PATTERN.match(model_source or ""):
        raise ValueError(f"model_source {model_source!r} is not a Hugging Face repo id or gs:// URI "
                         f"(pattern {MODEL_SOURCE_PATTERN.pattern})")
    return {"event": MODEL_PUBLISHED,
            "resource": {"prefect.resource.id": stack_resource_id(stack_name),
                         "prefect.resource.name": stack_name},
            "payload": {"model_source": model_source}}


def publish_model(stack_name: str, model_source: str):
    """Emit `gke-llm-flows.model.published` for `stack_name`; return the emitted Event (or None)."""
    from prefect.events import emit_event

    return emit_event(**model_published_event(stack_name, model_source))

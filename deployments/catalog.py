"""The deployments of one stack, defined once: `prefect.yaml` is rendered from this table and
`python -m deployments.serve` builds its `serve()` deployments from it, so the two cannot drift.

Each definition is kept in prefect.yaml's own vocabulary (schedules, triggers and concurrency as the
dicts `prefect deploy` reads); `deployments.serve` turns the same dicts into Prefect objects.

Every lifecycle deployment has a concurrency limit of one run (ENQUEUE: a second run waits for the
first instead of racing it); the flows add a per-stack global limit across deployments
(`flows.locks`), so a spin-down never overlaps a spin-up of the same stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployments.events import MODEL_PUBLISHED, stack_resource_id

# Deployment names, as `<flow name>/<deployment name>` in the UI and CLI.
SPIN_UP, SPIN_DOWN, AFTER_CRASH, ON_CHANGE, SWEEP = "spin-up", "spin-down", "after-crash", "on-change", "sweep"
SPIN_UP_FLOW, SPIN_DOWN_FLOW = "serve-llm", "teardown-llm"

# Weekday working hours by default; the timezone is the stack's (lifecycle.schedule_timezone).
SPIN_UP_HOUR, SPIN_DOWN_HOUR = 8, 20
SPIN_UP_CRON, SPIN_DOWN_CRON = f"0 {SPIN_UP_HOUR} * * 1-5", f"0 {SPIN_DOWN_HOUR} * * 1-5"
# The spin-up deployment's lease: the working day plus an hour, so the janitor never takes a scheduled
# stack down before its spin-down runs (the stack's default lease, 8 h, is for ad-hoc runs), yet still
# does when that spin-down never comes.
SCHEDULED_LEASE_S = (SPIN_DOWN_HOUR - SPIN_UP_HOUR + 1) * 3600
JANITOR_EVERY_S = 300

# The spin-up end states that start the teardown chain. Failed and TimedOut already run the flow's
# own on_failure hook; the chain is the second line (teardown is idempotent), and the only one for a
# Crashed state set by the zombie automation, when no process is left to run a hook.
CRASH_EVENTS = ("prefect.flow-run.Crashed", "prefect.flow-run.Failed", "prefect.flow-run.TimedOut")


@dataclass(frozen=True)
class StackTarget:
    """Which stack the deployments act on: the flows' `stack` parameter plus what triggers match on."""

    stack: dict[str, str]           # StackRef as a dict: {"block_name": ...} or {"file": ...}
    name: str                       # the stack's name (spec.name): custom events name it
    timezone: str = "UTC"           # IANA timezone of the weekday schedules
    block_name: str | None = None   # the serving Block whose updates trigger a redeploy


@dataclass(frozen=True)
class DeploymentDef:
    """One deployment in prefect.yaml's vocabulary."""

    name: str
    entrypoint: str                 # relative to the project root, as `prefect deploy` resolves it
    description: str
    parameters: dict[str, Any]
    schedules: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    concurrency_limit: dict[str, Any] = field(
        default_factory=lambda: {"limit": 1, "collision_strategy": "ENQUEUE"})
    tags: list[str] = field(default_factory=lambda: ["gke-llm-flows"])

    @property
    def flow_function(self) -> str:
        return self.entrypoint.rpartition(":")[2]


def _jinja_json(template: str) -> dict[str, Any]:
    """A trigger parameter rendered by Jinja, then parsed as JSON (for non-string values)."""
    return {"__prefect_kind": "json", "value": {"__prefect_kind": "jinja", "template": template}}


def crash_chain_trigger() -> dict[str, Any]:
    """Start the after-crash teardown for the stack of a spin-up run that ended badly.

    The teardown gets the failed run (`after_run`), so it honours that run's `keep_on_failure` and
    the stack's `lifecycle.keep_for_debugging` / `teardown_on_failure`, as the flow's own hook does.
    """
    return {
        "type": "event",
        "name": "teardown-after-spin-up-crash",
        "enabled": True,
        "expect": list(CRASH_EVENTS),
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        # Both must hold: runs of the serve-llm flow, from its spin-up deployment.
        "match_related": [{"prefect.resource.role": "flow", "prefect.resource.name": SPIN_UP_FLOW},
                          {"prefect.resource.role": "deployment", "prefect.resource.name": SPIN_UP}],
        "parameters": {
            "stack": _jinja_json("{{ flow_run.parameters.stack | tojson }}"),
            "reason": "spin-up run {{ flow_run.name }} ended {{ event.resource['prefect.state-name'] }}",
            "after_run": "{{ event.resource.id }}",
        },
    }


def crashed_spin_down_trigger() -> dict[str, Any]:
    """Run the spin-down again when its run Crashed (its host died mid-teardown, GPU nodes may bill).

    Nothing else would: the janitor judges the resources by the labels of the spin-up run, which
    Completed. Crashed only: a Failed spin-down already tried every step and said what is left. It
    cannot loop: the rerun is an after-crash run, which this trigger does not match.
    """
    return {
        "type": "event",
        "name": "rerun-crashed-spin-down",
        "enabled": True,
        "expect": ["prefect.flow-run.Crashed"],
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": [{"prefect.resource.role": "flow", "prefect.resource.name": SPIN_DOWN_FLOW},
                          {"prefect.resource.role": "deployment", "prefect.resource.name": SPIN_DOWN}],
        "parameters": {
            "stack": _jinja_json("{{ flow_run.parameters.stack | tojson }}"),
            "delete_cluster_too": _jinja_json("{{ flow_run.parameters.delete_cluster_too | default(none) | tojson }}"),
            "reason": "spin-down run {{ flow_run.name }} ended Crashed",
        },
    }


def block_updated_trigger(block_name: str) -> dict[str, Any]:
    """Redeploy when the stack's serving Block is saved again (the new spec is read at run time)."""
    return {
        "type": "event",
        "name": f"redeploy-on-block-update-{block_name}",
        "enabled": True,
        "expect": ["prefect.block-document.updated"],
        "match": {"prefect.resource.id": "prefect.block-document.*", "prefect.resource.name": block_name},
        "parameters": {"reason": "block {{ event.resource.name }} updated"},
    }


def model_published_trigger(stack_name: str) -> dict[str, Any]:
    """Redeploy with the model source named in a `gke-llm-flows.model.published` event's payload.

    Payload contract (see deployments.events): `model_source` is required. An event without it
    renders no run at all (Prefect drops it with `prefect.automation.action.failed`, InvalidJinja),
    and a value that fails redeploy_llm's pattern is rejected at run creation (409).
    """
    return {
        "type": "event",
        "name": f"redeploy-on-model-published-{stack_name}",
        "enabled": True,
        "expect": [MODEL_PUBLISHED],
        "match": {"prefect.resource.id": stack_resource_id(stack_name)},
        "parameters": {"model_source": "{{ event.payload.model_source }}",
                       # Cut to fit the flows' 500-character reason: a valid model source may be up to
                       # 1024 characters, and a reason too long would make Prefect refuse the run (409).
                       "reason": "model {{ event.payload.model_source | string | truncate(400) }} published "
                                 "(event {{ event.id }})"},
    }


def deployment_catalog(target: StackTarget) -> list[DeploymentDef]:
    """Return the five deployments of `target`: spin-up, spin-down, after-crash, on-change, sweep."""
    stack, tz = dict(target.stack), target.timezone
    redeploy_triggers = ([block_updated_trigger(target.block_name)] if target.block_name else []) + [
        model_published_trigger(target.name)]
    return [
        DeploymentDef(SPIN_UP, "flows/spin_up.py:serve_llm",
                      "Spin the stack up and validate it: weekday mornings, or from the UI's run form.",
                      {"stack": stack, "keep_on_failure": False, "lease_s": SCHEDULED_LEASE_S},
                      schedules=[{"cron": SPIN_UP_CRON, "timezone": tz, "active": True}]),
        DeploymentDef(SPIN_DOWN, "flows/spin_down.py:teardown_llm",
                      "Tear the stack down on weekday evenings (the cluster stays unless the policy says).",
                      {"stack": stack, "reason": "weekday spin-down schedule"},
                      schedules=[{"cron": SPIN_DOWN_CRON, "timezone": tz, "active": True}]),
        DeploymentDef(AFTER_CRASH, "flows/spin_down.py:teardown_llm",
                      "Tear down the stack of a spin-up run that crashed, failed or timed out, or of a "
                      "spin-down that crashed (started by event triggers; needs no surviving process).",
                      {"stack": stack, "reason": "spin-up crashed"},
                      triggers=[crash_chain_trigger(), crashed_spin_down_trigger()]),
        DeploymentDef(ON_CHANGE, "flows/redeploy.py:redeploy_llm",
                      "Apply a changed serving spec: on a serving Block update, or when a "
                      f"{MODEL_PUBLISHED} event names a new model source.",
                      {"stack": stack, "reason": "requested"},
                      triggers=redeploy_triggers),
        DeploymentDef(SWEEP, "flows/janitor.py:janitor",
                      "Tear down owned resources past their lease or left by a dead run.",
                      {"stacks": [stack], "dry_run": False},
                      schedules=[{"interval": JANITOR_EVERY_S, "active": True}],
                      concurrency_limit={"limit": 1, "collision_strategy": "CANCEL_NEW"}),
    ]

"""Prepare a Prefect server for our deployments: `python -m deployments.setup`. Idempotent.

1. Registers the `GKE LLM Serving Stack` block type (the UI can then create stacks).
2. Creates the process work pool `prefect.yaml` deploys to, if it is missing.
3. Creates (or replaces) the zombie-run automation: a run of one of our flows whose heartbeats stop
   for the window is marked Crashed. Without it, a run whose host died stays Running forever (the OSS
   server has no zombie detection), and the Crashed event is what starts the after-crash teardown
   deployment. Runs of other flows on the same server are never touched: their heartbeat periods are
   not ours to know, and a window shorter than theirs would mark their healthy runs Crashed.
4. Creates the per-stack global concurrency limit (one slot) for every saved stack block, and for
   each `--stack-name`, so the first runs never race each other to create it.
5. Reports whether the teardown-on-crash chain (the `teardown-llm/after-crash` deployment and its
   trigger) is deployed; `prefect deploy` or `python -m deployments.serve` creates it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from deployments.catalog import AFTER_CRASH
from deployments.render import DEFAULT_WORK_POOL

ZOMBIE_AUTOMATION = "gke-llm-flows-crash-zombie-runs"
DEFAULT_HEARTBEAT_S = 180            # Prefect's default PREFECT_FLOWS_HEARTBEAT_FREQUENCY
# The window must span several heartbeats: a 75 s window marked a healthy run with 180 s heartbeats
# Crashed (it later Completed, but its Crashed event had already fired). 2.5 periods was seen to work.
MIN_WINDOW_HEARTBEATS = 2
STACK_BLOCK_TYPE = "gke-llm-serving-stack"
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed")


def our_flow_names() -> list[str]:
    """The name of every flow defined in the `flows` package (the runs the zombie automation watches)."""
    import importlib
    import pkgutil

    from prefect import Flow

    import flows

    names: set[str] = set()
    for module in pkgutil.iter_modules(flows.__path__):
        if not module.name.startswith("_"):
            found = vars(importlib.import_module(f"flows.{module.name}")).values()
            names.update(f.name for f in found if isinstance(f, Flow))
    return sorted(names)


def zombie_automation(window_s: float, *, heartbeat_s: float):
    """The automation that marks a run of our flows Crashed when no heartbeat came for `window_s` seconds.

    Raises ValueError when the window is under MIN_WINDOW_HEARTBEATS heartbeat periods: a shorter one
    marks healthy runs Crashed, and their Crashed event would tear down a working stack.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    if window_s < MIN_WINDOW_HEARTBEATS * heartbeat_s:
        raise ValueError(f"zombie window {window_s:g}s is under {MIN_WINDOW_HEARTBEATS} heartbeat periods "
                         f"({heartbeat_s:g}s each, PREFECT_FLOWS_HEARTBEAT_FREQUENCY): healthy runs would be "
                         f"marked Crashed; use at least {MIN_WINDOW_HEARTBEATS * heartbeat_s:g}s")
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Mark runs of gke-llm-flows' flows Crashed when their heartbeats stop (host died); "
                    "starts the teardown chain.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Heartbeats and state events both name the run's flow as a related resource.
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": our_flow_names()},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=window_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {window_s:g}s: the flow's host is gone")],
    )


def ensure_zombie_automation(client, window_s: float, *, heartbeat_s: float) -> str:
    """Create the zombie automation, replacing any of the same name. Returns its id."""
    wanted = zombie_automation(window_s, heartbeat_s=heartbeat_s)
    for old in client.read_automations_by_name(ZOMBIE_AUTOMATION):
        client.delete_automation(old.id)
    return str(client.create_automation(wanted))


def ensure_work_pool(client, name: str) -> bool:
    """Create the process work pool `name` if missing; return True if it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_work_pool(name)
        return False
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        return True


def saved_stack_names(client) -> list[str]:
    """The stack names (spec.name) of every saved serving-stack block."""
    from prefect.exceptions import ObjectNotFound

    try:
        documents = client.read_block_documents_by_type(STACK_BLOCK_TYPE, include_secrets=False)
    except ObjectNotFound:
        return []
    return sorted({d.data["spec"]["name"] for d in documents if isinstance(d.data.get("spec"), dict)
                   and d.data["spec"].get("name")})


def crash_chain_status(client) -> str:
    """Say whether the after-crash teardown deployment and its trigger automation exist."""
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(f"teardown-llm/{AFTER_CRASH}")
    except ObjectNotFound:
        return "not deployed yet: run `prefect deploy --all --prefect-file deployments/prefect.yaml`"
    owned = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
    return f"deployed ({deployment.id}), {len(owned)} trigger automation(s)"


def run_setup(*, work_pool: str, window_s: float, heartbeat_s: float, stack_names: list[str]) -> dict:
    """Do every setup step against the current PREFECT_API_URL; return what was done."""
    from prefect.client.orchestration import get_client

    from blocks.prefect_blocks import ServingStackBlock
    from flows.locks import ensure_stack_limit

    ServingStackBlock.register_type_and_schema()
    with get_client(sync_client=True) as client:
        created_pool = ensure_work_pool(client, work_pool)
        automation_id = ensure_zombie_automation(client, window_s, heartbeat_s=heartbeat_s)
        names = sorted(set(stack_names) | set(saved_stack_names(client)))
        chain = crash_chain_status(client)
    limits = [ensure_stack_limit(name) for name in names]
    return {"block_type": STACK_BLOCK_TYPE, "work_pool": work_pool, "work_pool_created": created_pool,
            "zombie_automation": automation_id, "stack_limits": limits, "crash_chain": chain}


def main(argv: list[str] | None = None) -> int:
    from prefect.settings import get_current_settings

    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__.splitlines()[0])
    parser.add_argument("--work-pool", default=DEFAULT_WORK_POOL, help="process work pool to create if missing")
    parser.add_argument("--zombie-after-s", type=float, default=None,
                        help="mark a run Crashed after this long without heartbeat (default 4 heartbeats)")
    parser.add_argument("--stack-name", action="append", default=[], help="also create this stack's limit")
    args = parser.parse_args(argv)
    heartbeat_s = float(get_current_settings().flows.heartbeat_frequency or DEFAULT_HEARTBEAT_S)
    window_s = args.zombie_after_s if args.zombie_after_s is not None else 4 * heartbeat_s
    try:
        done = run_setup(work_pool=args.work_pool, window_s=window_s, heartbeat_s=heartbeat_s,
                         stack_names=args.stack_name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in done.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

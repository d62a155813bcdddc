"""Serve every deployment of one stack from this process: `python -m deployments.serve --stack FILE`.

For trying things out without a work pool: the same deployments as `prefect.yaml` (both come from
`deployments.catalog`), run by Prefect's `serve()` in child processes of this one. Stop it with
Ctrl-C or SIGTERM: in-flight runs are cancelled (their on_cancellation hook tears the stack down) and
the deployments are paused until served again.

Against the sandbox, start it with the sandbox's clock in GKE_LLM_FLOWS_SIMULATED_CLOCK (children
inherit the environment). Set PREFECT_FLOWS_HEARTBEAT_FREQUENCY below the zombie automation's window
(`python -m deployments.setup`) if you rely on it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from deployments.catalog import SPIN_UP, DeploymentDef, StackTarget, deployment_catalog


def load_flow(entrypoint: str):
    """Import the flow object named by `flows/<module>.py:<function>`."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def to_schedule(spec: dict[str, Any]):
    """A prefect.yaml schedule dict (cron or interval) as a `prefect.schedules.Schedule`."""
    from prefect.schedules import Cron, Interval

    active = spec.get("active", True)
    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone"), active=active)
    if "interval" in spec:
        return Interval(timedelta(seconds=spec["interval"]), anchor_date=spec.get("anchor_date"),
                        timezone=spec.get("timezone"), active=active)
    raise ValueError(f"schedule {spec!r}: expected a 'cron' or an 'interval' key")


def to_trigger(spec: dict[str, Any]):
    """A prefect.yaml trigger dict as the DeploymentTrigger `prefect deploy` would build from it."""
    from prefect.events import DeploymentTriggerTypes

    return TypeAdapter(DeploymentTriggerTypes).validate_python(dict(spec))


def to_runner_deployment(d: DeploymentDef, *, extra_schedules: list | None = None):
    """Build the `serve()` deployment of one catalog entry."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    limit = ConcurrencyLimitConfig(
        limit=d.concurrency_limit["limit"],
        collision_strategy=ConcurrencyLimitStrategy(d.concurrency_limit["collision_strategy"]))
    return load_flow(d.entrypoint).to_deployment(
        name=d.name, description=d.description, tags=list(d.tags), parameters=d.parameters,
        schedules=[to_schedule(s) for s in d.schedules] + list(extra_schedules or []),
        triggers=[to_trigger(t) for t in d.triggers], concurrency_limit=limit,
        enforce_parameter_schema=True)


def build_deployments(target: StackTarget, *, spin_up_in_s: float | None = None) -> list:
    """All deployments of `target`; `spin_up_in_s` adds a daily spin-up starting that many seconds from now."""
    from prefect.schedules import Interval

    built = []
    for d in deployment_catalog(target):
        extra = []
        if d.name == SPIN_UP and spin_up_in_s is not None:
            start = datetime.now(timezone.utc) + timedelta(seconds=spin_up_in_s)
            extra.append(Interval(timedelta(days=1), anchor_date=start))
        built.append(to_runner_deployment(d, extra_schedules=extra))
    return built


def stack_target(*, stack_file: str | None, block_name: str | None) -> StackTarget:
    """Read the stack once to learn its name and timezone; raise SpecError if it is invalid."""
    from flows.stack_ref import StackRef, load_stack

    ref = StackRef(file=str(Path(stack_file).resolve()) if stack_file else None, block_name=block_name)
    spec = load_stack(ref).spec
    return StackTarget(stack=ref.model_dump(exclude_none=True), name=spec.name,
                       timezone=spec.lifecycle.schedule_timezone, block_name=block_name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stack", metavar="FILE", help="stack YAML file")
    which.add_argument("--block", metavar="NAME", help="saved 'GKE LLM Serving Stack' block name "
                       "(its updates then trigger a redeploy)")
    parser.add_argument("--spin-up-in", type=float, metavar="SECONDS", default=None,
                        help="also schedule a daily spin-up whose first run is SECONDS from now")
    parser.add_argument("--limit", type=int, default=4, help="at most this many runs at once (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from prefect import serve

    from blocks.errors import GkeLlmFlowsError

    args = _parser().parse_args(argv)
    try:
        target = stack_target(stack_file=args.stack, block_name=args.block)
    except GkeLlmFlowsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    serve(*build_deployments(target, spin_up_in_s=args.spin_up_in), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

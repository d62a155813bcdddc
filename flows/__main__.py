"""Command line: `python -m flows demo | up | down | redeploy | status | janitor`.

`demo` runs the whole lifecycle on the embedded sandbox. The others act on a stack file, against
real GCP or a running `python -m sandbox` (whatever the file's `cluster.api_endpoint` says).
"""

from __future__ import annotations

import argparse
import json
import sys

from blocks.errors import GkeLlmFlowsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="spin up, validate and spin down on the embedded sandbox")
    demo.add_argument("--time-scale", type=float, default=None, help="simulated seconds per real second")
    for name, text in (("up", "spin up and validate"), ("down", "tear down"),
                       ("redeploy", "apply the serving spec to a running stack"), ("status", "show state")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--stack", required=True, help="stack YAML file")
        if name == "down":
            cmd.add_argument("--delete-cluster", action="store_true", help="delete the cluster too")
        if name in ("up", "down"):
            cmd.add_argument("--dry-run", action="store_true",
                             help="print what would be created, changed or deleted; touch nothing")
        if name == "redeploy":
            cmd.add_argument("--model-source", default=None, help="new model source")
    janitor = sub.add_parser("janitor", help="tear down leaked or expired resources")
    janitor.add_argument("--stack", action="append", required=True, help="stack YAML file (repeatable)")
    janitor.add_argument("--dry-run", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from flows.demo import DEFAULT_TIME_SCALE, run_demo

        return run_demo(args.time_scale or DEFAULT_TIME_SCALE)
    if getattr(args, "dry_run", False) and args.command in ("up", "down"):
        return _dry_run(args)
    try:
        result = _run(args)
    except GkeLlmFlowsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


def _run(args: argparse.Namespace):
    from flows.stack_ref import StackRef

    if args.command == "janitor":
        from flows.janitor import janitor

        return janitor(stacks=[StackRef(file=f) for f in args.stack], dry_run=args.dry_run)
    stack = StackRef(file=args.stack)
    if args.command == "up":
        from flows.spin_up import serve_llm

        return serve_llm(stack=stack)
    if args.command == "down":
        from flows.spin_down import teardown_llm

        return teardown_llm(stack=stack, delete_cluster_too=True if args.delete_cluster else None)
    if args.command == "redeploy":
        from flows.redeploy import redeploy_llm

        return redeploy_llm(stack=stack, model_source=args.model_source)
    from flows.status import stack_status

    return stack_status(stack=stack)


def _dry_run(args: argparse.Namespace) -> int:
    """Print the plan of `up` or `down` for the stack file (GET requests only); exit 1 on a bad stack."""
    from flows.connections import Connections
    from flows.plan import format_plan, plan_spin_down, plan_spin_up
    from flows.stack_ref import StackRef, load_stack
    from tasks.clock import clock_from_env

    try:
        loaded = load_stack(StackRef(file=args.stack))
        conn = Connections(loaded, clock_from_env())
        if args.command == "up":
            print(format_plan(f"spin-up plan for stack {loaded.spec.name!r}:", plan_spin_up(conn)))
        else:
            with_cluster = args.delete_cluster or loaded.spec.lifecycle.delete_cluster_on_teardown
            print(format_plan(f"spin-down plan for stack {loaded.spec.name!r}:",
                              plan_spin_down(conn, delete_cluster_too=with_cluster)))
    except GkeLlmFlowsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

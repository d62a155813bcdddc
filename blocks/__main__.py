"""`python -m blocks check|render STACK_FILE`: see what a stack will create without touching anything.

`check` validates the stack file: exit 0, or print every problem and exit 1. `render` prints a
multi-document YAML stream: the RayService manifest, then the GKE CreateClusterRequest and
CreateNodePoolRequest bodies as the REST API's JSON carries them (camelCase), each with a `kind`.
Like `terraform plan` or `helm template`, neither command makes a network call.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import yaml

from blocks.errors import SpecError
from blocks.spec import CapacityMode, StackSpec


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the CLI; return the process exit code (0 ok, 1 invalid stack or unreadable file, 2 usage)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        spec = StackSpec.from_yaml(args.stack_file)
    except OSError as e:
        print(f"error: cannot read stack file {args.stack_file!r}: {e.strerror or e}", file=err)
        return 1
    except SpecError as e:
        print(f"{args.stack_file}: invalid stack spec ({len(e.problems)} problem(s)):", file=err)
        for problem in e.problems:
            print(f"  - {problem}", file=err)
        return 1
    if args.command == "check":
        print(f"{args.stack_file}: ok: stack {spec.name!r}, cluster {spec.cluster.name!r} in "
              f"{spec.cluster.location}, {spec.gpu_pool.node_count} x {spec.gpu_pool.machine_type}", file=out)
        return 0
    try:
        out.write(render_stream(spec, zone=args.zone, capacity_mode=args.capacity_mode,
                                hf_token=args.with_hf_token))
    except SpecError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=err)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m blocks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate a stack file").add_argument("stack_file")
    render = commands.add_parser("render", help="print the manifests and GKE requests as YAML")
    render.add_argument("stack_file")
    render.add_argument("--zone", help="GPU pool zone (default: gpu_pool.node_locations[0])")
    render.add_argument("--capacity-mode", choices=[m.value for m in CapacityMode],
                        help="GPU capacity mode (default: the first of gpu_pool.capacity_modes)")
    render.add_argument("--with-hf-token", action="store_true",
                        help="render as if an HF token is configured (a secretKeyRef, never the token)")
    return parser


def render_stream(spec: StackSpec, *, zone: str | None = None, capacity_mode: str | None = None,
                  hf_token: bool = False) -> str:
    """Return the YAML stream of what `spec` creates: RayService, cluster and node pool requests."""
    from blocks import render_gke, render_rayservice

    pool_request = render_gke.create_node_pool_request(spec, zone=zone, capacity_mode=capacity_mode)
    documents: list[tuple[list[str], dict[str, Any]]] = [
        ([], render_rayservice.ray_service_manifest(spec, hf_token=hf_token)),
        ([], {"kind": "CreateClusterRequest",
              **render_gke.request_json(render_gke.create_cluster_request(spec))}),
        (_v1beta1_note(spec), {"kind": "CreateNodePoolRequest", **render_gke.request_json(pool_request)}),
    ]
    return "".join(_document(comments, body) for comments, body in documents)


def _v1beta1_note(spec: StackSpec) -> list[str]:
    from blocks import render_gke

    interval = spec.gpu_pool.host_maintenance_interval
    if interval is None:
        return []
    return [f"host_maintenance_interval {interval} has no v1 field: this node pool is sent as",
            f"POST {render_gke.node_pool_v1beta1_path(spec)} with the same nodePool plus",
            f"nodePool.config.hostMaintenancePolicy.maintenanceInterval: {interval}"]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (serveConfigV2) as literal blocks."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def _document(comments: list[str], body: dict[str, Any]) -> str:
    header = "".join(f"# {line}\n" for line in comments)
    return "---\n" + header + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=110)


if __name__ == "__main__":
    sys.exit(main())

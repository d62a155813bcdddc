"""`python -m flows demo`: the whole lifecycle on the embedded sandbox, no cloud account needed.

Starts the sandbox (simulated GKE, Kubernetes, KubeRay and Ray Serve) in this process, points a copy
of `examples/sandbox.yaml` at it, then runs spin-up (validated with the guide's prompt) and spin-down
as real Prefect flows (Prefect's embedded server unless PREFECT_API_URL says otherwise), and prints
the summary and the GPU node-minutes the sandbox billed. Exit 0 only if the endpoint answered
correctly and nothing is left billing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef
from tasks.clock import TIME_SCALE_ENV

EXAMPLE_STACK = Path(__file__).resolve().parent.parent / "examples" / "sandbox.yaml"
DEFAULT_TIME_SCALE = 120.0   # a ~40-minute simulated spin-up takes about 20 seconds


def demo_stack_file(gke_url: str, folder: Path, source: Path = EXAMPLE_STACK) -> Path:
    """Write the example sandbox stack aimed at `gke_url` into `folder`; return its path."""
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    data["cluster"]["api_endpoint"] = gke_url
    path = folder / "demo-stack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def still_billing(inventory: dict[str, Any]) -> list[str]:
    """GPU node pools whose VMs still run in the sandbox, as `cluster/pool` (each one bills)."""
    return [f"{c['name']}/{p['name']}" for c in inventory.get("clusters", []) for p in c.get("node_pools", [])
            if p.get("gpus_per_node") and p.get("vms_running")]


def run_demo(time_scale: float = DEFAULT_TIME_SCALE, *, out=sys.stdout) -> int:
    """Run spin-up, validation and spin-down on a fresh sandbox; return the process exit code."""
    from sandbox.app import Sandbox

    # On a busy 2-core machine Prefect's embedded server can take longer than its 20 s default to start.
    slow_start = {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}
    with temporary_settings(updates=slow_start), Sandbox(time_scale=time_scale, kubernetes=True) as sandbox, tempfile.TemporaryDirectory() as tmp:
        os.environ[TIME_SCALE_ENV] = sandbox.flows_clock_env()
        stack = StackRef(file=str(demo_stack_file(sandbox.gke_url, Path(tmp))))
        print(f"sandbox (a local simulation, {time_scale:g}x time) serving GKE at {sandbox.gke_url}", file=out)
        up = serve_llm(stack=stack, return_state=True)
        result = up.result(raise_on_failure=False)
        down = teardown_llm(stack=stack, delete_cluster_too=True, reason="demo finished", return_state=True)
        inventory = sandbox.inventory()
    billed_min = inventory["billing"]["gpu_node_seconds"] / 60
    leftover = still_billing(inventory)
    if up.is_completed():
        print("\n" + result["summary_markdown"] + "\n", file=out)
    else:
        print(f"\nspin-up FAILED: {result}", file=out)
    print(f"spin-down: {'ok' if down.is_completed() else down.message}", file=out)
    print(f"GPU node-minutes billed (simulated): {billed_min:.1f}; still billing: {leftover or 'nothing'}",
          file=out)
    return 0 if up.is_completed() and down.is_completed() and not leftover else 1

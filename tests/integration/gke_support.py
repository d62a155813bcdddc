"""Shared pieces of the GKE task tests: a sandbox, the real gateway over HTTP, specs, request-log helpers.

The gateway is the production one (`GkeGateway.connect`: the official ClusterManagerClient over REST
plus an HTTP session for v1beta1), pointed at the sandbox with anonymous credentials, as a stack
whose `cluster.api_endpoint` names the sandbox gets it. Tasks run on a `ScaledClock` at the
sandbox's time scale, so their deadlines and backoffs are in simulated seconds.
"""

from __future__ import annotations

import itertools
from typing import Any

from blocks.spec import StackSpec
from sandbox.app import Sandbox
from tasks.clock import ScaledClock
from tasks.gateways.gke import GkeGateway, RetryPolicy
from tasks.gke_credentials import gke_credentials

TIME_SCALE = 3000.0
PROJECT = "sandbox-project"
ZONE = "us-east5-a"
_names = itertools.count(1)


def make_spec(sandbox: Sandbox, **sections: Any) -> StackSpec:
    """A small stack aimed at `sandbox`, with a cluster name unique to the calling test."""
    n = next(_names)
    cluster = {"project": PROJECT, "location": ZONE, "name": f"c{n}", "api_endpoint": sandbox.gke_url,
               **sections.pop("cluster", {})}
    # Deadlines in simulated time are generous: at this scale one real second of CPU starvation (2 cores
    # shared with other suites) is 50 simulated minutes. Tests of deadlines pass their own.
    timeouts = {"cluster_create_s": 6 * 3600, "node_pool_create_s": 6 * 3600, "delete_s": 6 * 3600,
                **sections.pop("timeouts", {})}
    return StackSpec(name=sections.pop("name", "llm"), cluster=cluster, timeouts=timeouts, **sections)


def connect(spec: StackSpec, clock: ScaledClock) -> GkeGateway:
    """The production gateway for `spec`, as a flow would build it."""
    credentials = gke_credentials(None, api_endpoint=spec.cluster.api_endpoint)
    return GkeGateway.connect(credentials, api_endpoint=spec.cluster.api_endpoint, clock=clock,
                              retry=RetryPolicy(budget_s=6 * 3600))


def gke_requests(sandbox: Sandbox, cluster: str, *, since: int = 0) -> list[dict[str, Any]]:
    """GKE API requests about `cluster` (its path, its node pools, or a create naming it), from `since`."""
    def about(entry: dict[str, Any]) -> bool:
        body = entry.get("body") or {}
        named = isinstance(body, dict) and body.get("cluster", {}).get("name") == cluster
        return f"/clusters/{cluster}" in entry["path"] or named
    return [e for e in sandbox.requests() if e["seq"] >= since and about(e)]


def writes(sandbox: Sandbox, cluster: str, *, since: int = 0) -> list[str]:
    """The mutating requests (anything but GET) about `cluster`, as 'METHOD path' lines."""
    return [f"{e['method']} {e['path']}" for e in gke_requests(sandbox, cluster, since=since)
            if e["method"] != "GET"]


def next_seq(sandbox: Sandbox) -> int:
    """The sequence number the next request will get (to look only at what happens after now)."""
    return len(sandbox.requests())


def cluster_inventory(sandbox: Sandbox, cluster: str) -> dict[str, Any] | None:
    return next((c for c in sandbox.inventory()["clusters"] if c["name"] == cluster), None)


def gpu_vms_billing(sandbox: Sandbox, cluster: str) -> int:
    """How many GPU VMs of `cluster` exist right now, i.e. are on the bill (the sandbox's meter)."""
    return sum(p["vms_running"] for p in sandbox.inventory()["billing"]["pools"]
               if p["gpus_per_node"] and p["cluster"].endswith(f"/{cluster}"))

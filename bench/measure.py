"""What the fault matrix measures, read from the sandbox: foreign resources, writes, bills, timings.

Everything here reads the sandbox's control API objects (inventory, GKE request log, each cluster's
Kubernetes request log) or places resources through the official GKE client, as a stranger would.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1

from blocks.labels import LEASE_EXPIRY_KEY, MANAGED_BY_KEY, MANAGED_BY_VALUE, STACK_KEY
from blocks.spec import StackSpec

FOREIGN_CLUSTER = "not-ours"            # no labels at all: someone else's cluster
OTHER_STACK_CLUSTER = "other-stack"     # ours, but another stack's, with an expired lease (tempting)
FOREIGN_POOL = "foreign-pool"           # an unlabeled CPU pool inside our own cluster
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# A GPU VM left running is billed until someone notices: count one hour of it per VM.
LEAK_HORIZON_S = 3600.0


def gke_client(sandbox) -> container_v1.ClusterManagerClient:
    return container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options={"api_endpoint": sandbox.gke_url})


def _cpu_pool(name: str) -> container_v1.NodePool:
    return container_v1.NodePool(name=name, initial_node_count=1,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4"))


def place_foreign_clusters(sandbox, spec: StackSpec) -> None:
    """Create a cluster without labels and one of another stack (lease expired) beside ours."""
    parent = f"projects/{spec.cluster.project}/locations/{spec.cluster.location}"
    client = gke_client(sandbox)
    for name, labels in ((FOREIGN_CLUSTER, {}),
                         (OTHER_STACK_CLUSTER, {MANAGED_BY_KEY: MANAGED_BY_VALUE, STACK_KEY: "someone-else",
                                                LEASE_EXPIRY_KEY: "1"})):
        client.create_cluster(parent=parent, cluster=container_v1.Cluster(
            name=name, resource_labels=labels, node_pools=[_cpu_pool("default-pool")]))


def place_foreign_pool(sandbox, spec: StackSpec) -> None:
    """Create an unlabeled CPU pool in our (existing, idle) cluster and wait until it runs."""
    c = spec.cluster
    client = gke_client(sandbox)
    op = client.create_node_pool(parent=f"projects/{c.project}/locations/{c.location}/clusters/{c.name}",
                                 node_pool=_cpu_pool(FOREIGN_POOL))
    name = f"projects/{c.project}/locations/{c.location}/operations/{op.name}"
    while client.get_operation(name=name).status != container_v1.Operation.Status.DONE:
        threading.Event().wait(0.05)


def foreign_targets(spec: StackSpec) -> tuple[str, ...]:
    """Path fragments that name a foreign resource in a GKE request path."""
    return (f"/clusters/{FOREIGN_CLUSTER}", f"/clusters/{OTHER_STACK_CLUSTER}", f"/nodePools/{FOREIGN_POOL}")


def foreign_touched(requests: list[dict[str, Any]], spec: StackSpec, *, since_seq: int) -> list[str]:
    """Write requests (after `since_seq`) whose path names a foreign resource."""
    targets = foreign_targets(spec)
    return [f"{r['method']} {r['path']}" for r in requests if r["seq"] >= since_seq
            and r["method"] in WRITE_METHODS and any(t in r["path"] for t in targets)]


def foreign_missing(inventory: dict[str, Any], spec: StackSpec, *, pool_placed: bool) -> list[str]:
    """Foreign resources gone at the end (e.g. the unlabeled pool deleted along with our cluster)."""
    clusters = {c["name"]: c for c in inventory.get("clusters", [])}
    missing = [f"cluster {n}" for n in (FOREIGN_CLUSTER, OTHER_STACK_CLUSTER) if n not in clusters]
    ours = clusters.get(spec.cluster.name)
    if pool_placed and (ours is None or FOREIGN_POOL not in {p["name"] for p in ours["node_pools"]}):
        missing.append(f"node pool {spec.cluster.name}/{FOREIGN_POOL}")
    return missing


def duplicates(requests: list[dict[str, Any]], inventory: dict[str, Any], spec: StackSpec) -> list[str]:
    """Resources created twice: a successful create of a path while an earlier create of it was not
    deleted, plus owned GPU pools or RayClusters beyond one per stack at the end."""
    alive: dict[str, int] = {}
    found: list[str] = []
    for r in requests:
        if r.get("status") != 200:
            continue
        path = re.sub(r"^/v1(beta1)?/", "/", r["path"].split(":")[0])   # v1beta1 create, v1 delete
        if r["method"] == "POST" and path.endswith(("/clusters", "/nodePools")):
            name = (r.get("body") or {}).get("cluster", (r.get("body") or {}).get("nodePool", {})).get("name", "")
            key = f"{path}/{name}"
            if alive.get(key):
                found.append(f"created twice: {key}")
            alive[key] = 1
        elif r["method"] == "DELETE":
            alive.pop(path, None)
    for cluster in inventory.get("clusters", []):
        ours = [p["name"] for p in cluster["node_pools"] if p.get("gpus_per_node")
                and (p.get("resource_labels") or {}).get(STACK_KEY) == spec.name]
        if len(ours) > 1:
            found.append(f"{cluster['name']}: {len(ours)} GPU pools of stack {spec.name}: {ours}")
        ray_clusters = (cluster.get("kubernetes") or {}).get("rayclusters.ray.io", [])
        live = [c["name"] for c in ray_clusters if not c.get("deleting")]
        if len(live) > 1:
            found.append(f"{cluster['name']}: {len(live)} RayClusters: {live}")
    return found


def gpu_vms_running(inventory: dict[str, Any]) -> list[str]:
    """GPU pools with running VMs, as `cluster/pool xN`."""
    return [f"{c['name']}/{p['name']} x{p['vms_running']}" for c in inventory.get("clusters", [])
            for p in c.get("node_pools", []) if p.get("gpus_per_node") and p.get("vms_running")]


def leaked_gpu_node_seconds(inventory: dict[str, Any]) -> float:
    """GPU node-seconds still to be billed: running GPU VMs times the leak horizon."""
    return sum(p["vms_running"] for c in inventory.get("clusters", []) for p in c.get("node_pools", [])
               if p.get("gpus_per_node")) * LEAK_HORIZON_S


def kube_requests(sandbox, spec: StackSpec) -> list[dict[str, Any]]:
    """Our cluster's Kubernetes API requests, with `elapsed_s` added (empty if the cluster is gone)."""
    from sandbox.hooks import ClusterRef

    kube = sandbox.hooks.get(ClusterRef(spec.cluster.project, spec.cluster.location, spec.cluster.name))
    if kube is None:
        return []
    origin = datetime.fromisoformat(sandbox.clock.rfc3339().replace("Z", "+00:00")).timestamp() \
        - sandbox.clock.elapsed_s()
    return [dict(r, elapsed_s=datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() - origin)
            for r in kube.requests()]


def teardown_started_s(gke_requests: list[dict[str, Any]], kube_log: list[dict[str, Any]], spec: StackSpec,
                       *, after_s: float) -> float | None:
    """Simulated second of the first delete of one of our resources at or after `after_s`."""
    s = spec.serving
    ours = (f"/clusters/{spec.cluster.name}/nodePools/{spec.gpu_pool.name}", f"/clusters/{spec.cluster.name}")
    times = [r["elapsed_s"] for r in gke_requests if r["method"] == "DELETE" and r["elapsed_s"] >= after_s
             and r["path"].endswith(ours)]
    times += [r["elapsed_s"] for r in kube_log if r["method"] == "DELETE" and r["elapsed_s"] >= after_s
              and r["path"].endswith(f"/namespaces/{s.namespace}/rayservices/{s.ray_service_name}")]
    return min(times) if times else None


class FaultClock:
    """Records when each injected fault first fired (simulated seconds), by wrapping `faults.take`."""

    def __init__(self, sandbox):
        self.first_fired_s: float | None = None
        self._sandbox, self._take = sandbox, sandbox.faults.take
        sandbox.faults.take = self._recording_take

    def _recording_take(self, kind: str, **context: Any):
        fired = self._take(kind, **context)
        if fired is not None and self.first_fired_s is None:
            self.first_fired_s = self._sandbox.clock.elapsed_s()
        return fired

"""`stack_status`: what exists of a stack right now, read-only: cluster, GPU pool, RayService, and the
weights prefetch on the GPU nodes."""

from __future__ import annotations

from typing import Any

from google.cloud.container_v1 import types as T
from prefect import flow

from flows.connections import Connections
from flows.stack_ref import StackRef, load_stack
from tasks.clock import clock_from_env
from tasks.cluster import cluster_ref
from tasks.gateways.kube import RAY_SERVICE
from tasks.weights_prefetch import read_weights_prefetch


def _ray_service_status(conn: Connections) -> dict[str, Any] | None:
    kube = conn.kube()
    if kube is None:
        return None
    s = conn.stack.spec.serving
    live = kube.get(RAY_SERVICE, s.ray_service_name, s.namespace)
    if live is None:
        return None
    status = live.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    return {"name": s.ray_service_name, "ready": ready.get("status") == "True", "reason": ready.get("reason"),
            "apps": {name: app.get("status") for name, app in apps.items()},
            "serve_endpoints": status.get("numServeEndpoints", 0)}


@flow(name="stack-status")
def stack_status(stack: StackRef) -> dict[str, Any]:
    """Report the live state of the stack's cluster, GPU pool, RayService and weights prefetch
    (`{"source", "gpu_nodes", "complete_on"}`). Makes no writes."""
    conn = Connections(load_stack(stack), clock_from_env())
    spec, ref = conn.stack.spec, cluster_ref(conn.stack.spec)
    cluster = conn.gke.get_cluster(ref)
    pool = conn.gke.get_node_pool(ref, spec.gpu_pool.name) if cluster else None
    return {
        "stack": spec.name,
        "cluster": None if cluster is None else T.Cluster.Status(cluster.status).name,
        "gpu_node_pool": None if pool is None else T.NodePool.Status(pool.status).name,
        "ray_service": _ray_service_status(conn) if cluster else None,
        "weights_prefetch": _prefetch_status(conn) if cluster else None,
    }


def _prefetch_status(conn: Connections) -> dict[str, Any] | None:
    kube = conn.kube()
    return None if kube is None else read_weights_prefetch(kube, conn.stack.spec)

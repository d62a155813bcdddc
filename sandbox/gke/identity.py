"""Workload Identity Federation for GKE on the simulated control plane: the checks and defaults GKE applies.

- `cluster.workloadIdentityConfig.workloadPool` must be the project's pool, `PROJECT_ID.svc.id.goog`
  (GKE's docs: the only pool a Standard cluster can use); anything else is a 400.
- A node pool asking for `workloadMetadataConfig.mode: GKE_METADATA` needs the cluster's pool set; a
  cluster without it refuses the pool (400 FAILED_PRECONDITION). The wording is ours, not captured.
- In a cluster with a pool, node pools that leave the mode unset get GKE_METADATA (GKE's docs: new
  node pools of a Workload Identity cluster use it), so the Cluster and NodePool GETs show it.
"""

from __future__ import annotations

from typing import Any

from sandbox.gke import errors

GKE_METADATA = "GKE_METADATA"


def check_cluster(project: str, cluster: dict[str, Any]) -> None:
    """Raise a 400 when the requested workload pool is not the project's."""
    pool = (cluster.get("workloadIdentityConfig") or {}).get("workloadPool")
    if pool and pool != f"{project}.svc.id.goog":
        raise errors.invalid(f'Invalid value for field "cluster.workloadIdentityConfig.workloadPool": "{pool}". '
                             f'The workload pool must be "{project}.svc.id.goog".')


def node_pool_config(cluster: dict[str, Any], pool: dict[str, Any], field: str) -> dict[str, Any]:
    """`pool` with GKE's Workload Identity default filled in; 400 when it asks for what the cluster lacks."""
    enabled = bool((cluster.get("workloadIdentityConfig") or {}).get("workloadPool"))
    config = dict(pool.get("config") or {})
    mode = (config.get("workloadMetadataConfig") or {}).get("mode")
    if mode == GKE_METADATA and not enabled:
        raise errors.precondition(f'Node pool "{pool.get("name")}" ({field}.config.workloadMetadataConfig.mode '
                                  "GKE_METADATA) needs Workload Identity on the cluster: set "
                                  "workloadIdentityConfig.workloadPool on the cluster first.")
    if enabled and not mode:
        config["workloadMetadataConfig"] = {"mode": GKE_METADATA}
    return {**pool, "config": config}

"""Whether the simulated KubeRay operator process is up: its Deployment and its CRDs.

Upstream `main.go` registers the RayCluster, RayService and RayJob controllers unconditionally, so a
missing CRD makes the manager exit and the pod crash-loop (kuberay#538, #1552). The operator acts
only while its Deployment (`kuberay-operator` in any namespace, or labelled
`app.kubernetes.io/name=kuberay`) is Available and those three CRDs are Established.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.controllers.base import CRDS, DEPLOYMENTS

REQUIRED_CRDS = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io")
OPERATOR_NAME = "kuberay-operator"


def is_operator_pod(pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    if labels.get("app.kubernetes.io/component") == OPERATOR_NAME:
        return True
    return any("kuberay/operator" in (c.get("image") or "") for c in (pod.get("spec") or {}).get("containers") or [])


def is_operator_deployment(deployment: dict[str, Any]) -> bool:
    labels = deployment["metadata"].get("labels") or {}
    return deployment["metadata"]["name"] == OPERATOR_NAME or labels.get("app.kubernetes.io/name") == "kuberay"


def missing_crds(ctx: ClusterContext) -> list[str]:
    """Required CRDs that do not exist or are not Established yet."""
    return [name for name in REQUIRED_CRDS if not ctx.store.peek(CRDS, None, name, _established)]


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def operator_active(ctx: ClusterContext) -> tuple[bool, str]:
    """(True, "") when the operator would reconcile now; else (False, why not)."""
    deployments, _ = ctx.store.list(DEPLOYMENTS)
    candidates = [d for d in deployments if is_operator_deployment(d)]
    if not candidates:
        return False, "no kuberay-operator Deployment"
    if not any(_available(d) for d in candidates):
        return False, "the kuberay-operator Deployment is not Available"
    if missing := missing_crds(ctx):
        return False, f"CRDs not established: {missing}"
    return True, ""


def _available(deployment: dict[str, Any]) -> bool:
    return any(c.get("type") == "Available" and c.get("status") == "True"
               for c in (deployment.get("status") or {}).get("conditions") or [])

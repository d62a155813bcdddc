"""Simulated Kubernetes controllers of one cluster, run on the sandbox's scaled clock.

`CONTROLLERS` lists the classes the cluster runtime instantiates (no arguments) and starts with its
`ClusterContext`: node faults, the scheduler, the kubelets, Deployments/ReplicaSets, and the KubeRay
operator's RayCluster and RayService controllers. Garbage collection by ownerReferences is the API
server's `deletion.Deleter` (it also runs graceful pod deletion), started with the API server. Nodes themselves come
from `nodes.add_node_pool_nodes` / `remove_node_pool_nodes`, called when GKE node pools change.
Timings come from the profile's `kube` section (`sandbox/profiles/<name>/kube.yaml`).
"""

from __future__ import annotations

from sandbox.kube.controllers.deployments import DeploymentController
from sandbox.kube.controllers.kubelet import Kubelet
from sandbox.kube.controllers.kuberay import RayServiceController
from sandbox.kube.controllers.nodes import NodeController, add_node_pool_nodes, remove_node_pool_nodes
from sandbox.kube.controllers.raycluster import RayClusterController
from sandbox.kube.controllers.scheduler import Scheduler

CONTROLLERS: list[type] = [
    NodeController,
    Scheduler,
    Kubelet,
    DeploymentController,
    RayClusterController,
    RayServiceController,
]

__all__ = ["CONTROLLERS", "add_node_pool_nodes", "remove_node_pool_nodes"]

"""Simulated Kubernetes controllers of one cluster, run on the sandbox's scaled clock.

`CONTROLLERS` lists the classes the cluster runtime instantiates (no arguments) and starts with its
`ClusterContext`: node faults, the scheduler, the kubelets, Deployments/ReplicaSets, DaemonSets, and the KubeRay
operator's RayCluster and RayService controllers. Garbage collection by ownerReferences is the API
server's `deletion.Deleter` (it also runs graceful pod deletion), started with the API server. Nodes themselves come
from `nodes.add_node_pool_nodes` / `remove_node_pool_nodes`, called when GKE node pools change.
Timings come from the profile's `kube` section (`sandbox/profiles/<name>/kube.yaml`).

Faults (`ctx.faults`, i.e. `POST /_sandbox/faults`), each documented where it acts:
| kind | parameters | shows up as | module |
|---|---|---|---|
| `image_pull_backoff` | pod_prefix?, node_type?, times? | ErrImagePull/ImagePullBackOff, HeadPodReady reason | kubelet |
| `crashloop` | pod_prefix?, node_type? | CrashLoopBackOff, restartCount, HeadPodReady reason | kubelet |
| `oom_killed` | pod_prefix?, node_type? (default workers) | lastState OOMKilled exit 137 | kubelet |
| `disk_full` | pod_prefix?, node_type? (default workers) | pod Evicted (ephemeral-storage), recreated | eviction |
| `operator_crashloop` | - | operator pod CrashLoopBackOff, nothing reconciled | programs |
| `unschedulable`, `no_gpu_capacity` | - | another team's pods take every GPU: PodScheduled=False Insufficient nvidia.com/gpu | scheduler |
| `node_lost` | node_prefix?, times? | node removed, its pods failed and replaced | nodes |
| `deploy_failed` | model_id? | app/deployment DEPLOY_FAILED with a traceback | rayserve |
| `slow_download` | factor, model_id? | app DEPLOYING longer; a weights prefetch copies slower | rayserve, weights_cache |
| `stalled_download` | at_fraction? (default 0.4), model_id? | app DEPLOYING forever, worker disk flat, GPUs idle; a prefetch stops there, never Ready | rayserve, weights_cache |
| `wrong_answer` / `slow_answer` | - / seconds | wrong box order / added latency | rayserve_openai |
"""

from __future__ import annotations

from sandbox.kube.controllers.daemonsets import DaemonSetController
from sandbox.kube.controllers.deployments import DeploymentController
from sandbox.kube.controllers.jobs import JobController
from sandbox.kube.controllers.kubelet import Kubelet
from sandbox.kube.controllers.kuberay import RayServiceController
from sandbox.kube.controllers.nodes import NodeController, add_node_pool_nodes, remove_node_pool_nodes
from sandbox.kube.controllers.raycluster import RayClusterController
from sandbox.kube.controllers.scheduler import Scheduler

# Parameters each Kubernetes-side fault kind understands (besides `kind`, `times`, `rate`), for the
# control API to check requests against, as it does for the GKE kinds.
KUBE_FAULT_PARAMS: dict[str, set[str]] = {
    "image_pull_backoff": {"pod_prefix", "node_type"},
    "crashloop": {"pod_prefix", "node_type"},
    "oom_killed": {"pod_prefix", "node_type"},
    "disk_full": {"pod_prefix", "node_type"},
    "operator_crashloop": set(),
    "unschedulable": set(),
    "no_gpu_capacity": set(),
    "node_lost": {"node_prefix"},
    "deploy_failed": {"model_id"},
    "slow_download": {"factor", "model_id"},
    "stalled_download": {"at_fraction", "model_id"},
    "wrong_answer": set(),
    "slow_answer": {"seconds"},
}

CONTROLLERS: list[type] = [
    NodeController,
    Scheduler,
    Kubelet,
    DeploymentController,
    DaemonSetController,
    RayClusterController,
    RayServiceController,
    JobController,
]

__all__ = ["CONTROLLERS", "KUBE_FAULT_PARAMS", "add_node_pool_nodes", "remove_node_pool_nodes"]

"""A simulated GKE cluster's Kubernetes side for the KubeRay integration tests.

Starts the sandbox's HTTPS API server with its controllers (nodes, scheduler, kubelet, Deployments,
KubeRay, Ray Serve), registers a CPU node and, on request, the GPU pool's nodes, and gives the tests
the *real* gateway (`KubeApi` over an official `kubernetes.client.ApiClient`) pointed at it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client

from blocks.spec import StackSpec
from sandbox.clock import ScaledClock as SandboxClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.cluster import KubeCluster, default_controllers
from sandbox.kube.controllers.nodes import add_node_pool_nodes
from sandbox.profile import load_profile
from tasks.clock import ScaledClock
from tasks.gateways.kube import KubeApi

TIME_SCALE = 600.0
TOKEN = "sandbox-token-not-a-secret"
HF_TOKEN = "hf_integrationSECRETtoken123456"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

CPU_POOL = {"name": "default-pool", "config": {"machineType": "e2-standard-16"}, "locations": ["us-east5-a"]}
GPU_POOL = {"name": "gpu-node-pool", "locations": ["us-east5-a"], "config": {
    "machineType": "a3-highgpu-8g",
    "accelerators": [{"acceleratorCount": "8", "acceleratorType": "nvidia-h100-80gb",
                      "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}],
    "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]}}


@dataclass
class RequestSpy:
    """Records every request the official client sends (method, path); it still sends them."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str]]:
        """Requests that may change something (a server-side dry run does not)."""
        return [(m, p) for m, p in self.calls if m in WRITE_METHODS and "dryRun=All" not in p]


@dataclass
class KubeSandbox:
    cluster: KubeCluster
    clock: ScaledClock                 # the tasks' clock, same scale as the sandbox's
    spy: RequestSpy
    api_client: kubernetes.client.ApiClient

    @property
    def ctx(self):
        return self.cluster.ctx

    @property
    def kube(self) -> KubeApi:
        return KubeApi(self.api_client)

    def sim_elapsed_s(self) -> float:
        return self.cluster.ctx.clock.elapsed_s()

    def add_gpu_nodes(self, count: int = 2) -> None:
        names = [f"gke-kuberay-gpu-cluster-gpu-node-pool-{i:04d}" for i in range(count)]
        add_node_pool_nodes(self.ctx, GPU_POOL, names)

    def inject(self, fault: dict[str, Any]) -> dict[str, Any]:
        return self.ctx.faults.add(fault)


def api_client_for(cluster: KubeCluster, spy: RequestSpy) -> kubernetes.client.ApiClient:
    """Build the ApiClient as kube_client.py does for GKE: endpoint, the cluster CA, a bearer token."""
    config = kubernetes.client.Configuration()
    config.host = cluster.base_url
    config.ca_cert_data = cluster.ca_pem
    config.api_key = {"authorization": TOKEN}
    config.api_key_prefix = {"authorization": "Bearer"}
    client = kubernetes.client.ApiClient(config)
    send = client.rest_client.request

    def recording(method, url, *args, **kwargs):
        spy.calls.append((method, url.replace(cluster.base_url, "")))
        return send(method, url, *args, **kwargs)

    client.rest_client.request = recording
    return client


def start_kube_sandbox(*, time_scale: float = TIME_SCALE, gpu_nodes: int = 0,
                       profile: str = "realistic") -> KubeSandbox:
    """Start one simulated cluster with a CPU node (and `gpu_nodes` GPU nodes)."""
    sim_clock = SandboxClock(time_scale)
    loaded = load_profile(profile)
    cluster = KubeCluster(ClusterRef("my-project", "us-east5-a", "kuberay-gpu-cluster"), clock=sim_clock,
                          profile=loaded, faults=Faults(seed=0), controllers=default_controllers())
    cluster.start()
    add_node_pool_nodes(cluster.ctx, CPU_POOL, ["gke-kuberay-gpu-cluster-default-pool-0000"])
    spy = RequestSpy()
    box = KubeSandbox(cluster, ScaledClock(time_scale), spy, api_client_for(cluster, spy))
    if gpu_nodes:
        box.add_gpu_nodes(gpu_nodes)
    return box


def stop_kube_sandbox(box: KubeSandbox) -> None:
    box.api_client.close()
    box.cluster.stop()
    box.cluster.ctx.clock.stop()


def kube_sandbox(**kwargs: Any) -> Iterator[KubeSandbox]:
    """Generator for a pytest fixture: start, yield, stop."""
    box = start_kube_sandbox(**kwargs)
    try:
        yield box
    finally:
        stop_kube_sandbox(box)


def stack_spec(**overrides: Any) -> StackSpec:
    """The guide's stack, as the sandbox example would give it."""
    # Generous operator deadline: at 600x one wall second of sandbox latency on a loaded machine is
    # ten simulated minutes.
    data: dict[str, Any] = {"name": "deepseek-r1", "cluster": {"project": "my-project", "location": "us-east5-a"},
                            "timeouts": {"operator_ready_s": 6 * 3600, "model_load_s": 6 * 3600}}
    for key, value in overrides.items():
        data[key] = value
    return StackSpec.parse(data)


def wait_for(predicate, *, timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` (wall clock) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def operator_sandbox(time_scale: float) -> Iterator[KubeSandbox]:
    """Generator for a module fixture: the fast profile, two GPU nodes, the KubeRay operator installed."""
    from tasks.kuberay_operator import ensure_kuberay_operator

    for box in kube_sandbox(time_scale=time_scale, profile="fast", gpu_nodes=2):
        ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
        yield box


def reset_scenario(box: KubeSandbox) -> None:
    """After a scenario: no faults, the RayService with its cluster and pods gone, and the nodes' weight
    caches empty (a worker's download into the hostPath cache would otherwise serve the next scenario)."""
    from sandbox.kube.weights_cache import forget_caches
    from tasks.ray_service import delete_ray_service

    box.ctx.faults.clear()
    delete_ray_service.fn(box.kube, stack_spec(), clock=box.clock, timeout_s=3600)
    forget_caches(box.ctx)

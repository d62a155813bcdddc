"""Shared pieces of the GKE sandbox tests: the official client over REST, specs from the guide, waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from google.cloud.container_v1 import types as T

from sandbox.app import Sandbox
from sandbox.hooks import ClusterRef, KubeEndpoint
from sandbox.testing import gke_sandbox, running_sandbox, wait_for  # noqa: F401  (gke_sandbox is a fixture)

PROJECT = "sandbox-project"
ZONE = "us-east5-a"
PARENT = f"projects/{PROJECT}/locations/{ZONE}"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
DONE = T.Operation.Status.DONE


def make_client(sandbox: Sandbox) -> container_v1.ClusterManagerClient:
    return container_v1.ClusterManagerClient(
        transport="rest", client_options={"api_endpoint": sandbox.gke_url}, credentials=AnonymousCredentials())


@pytest.fixture
def client(gke_sandbox: Sandbox) -> container_v1.ClusterManagerClient:  # noqa: F811
    return make_client(gke_sandbox)


@pytest.fixture
def watched_client() -> Iterator[container_v1.ClusterManagerClient]:
    """A client on a sandbox at 1000x: slow enough that a test sees PROVISIONING/STOPPING and busy
    clusters reliably on a loaded machine (a pool delete lasts 0.15 s, not 0.05 s)."""
    with running_sandbox(time_scale=1000.0) as sandbox:
        yield make_client(sandbox)


def cluster_spec(name: str = "kuberay-gpu-cluster", labels: dict[str, str] | None = None) -> T.Cluster:
    """The guide's `clusters create` as the client library sends it (reference/gke.md section 1)."""
    gcfs = T.GcfsConfig(enabled=True)
    return T.Cluster(
        name=name, locations=[ZONE], resource_labels=labels or {},
        ip_allocation_policy=T.IPAllocationPolicy(use_ip_aliases=True),
        node_pool_defaults=T.NodePoolDefaults(node_config_defaults=T.NodeConfigDefaults(gcfs_config=gcfs)),
        node_pools=[T.NodePool(name="default-pool", initial_node_count=1, config=T.NodeConfig(
            machine_type="e2-standard-16", gcfs_config=gcfs, oauth_scopes=SCOPES))])


def gpu_pool_spec(name: str = "gpu-node-pool", nodes: int = 2) -> T.NodePool:
    """The guide's A3 pool (2 x a3-highgpu-8g, 8 x H100 each) without the v1beta1-only field."""
    config = T.NodeConfig(
        machine_type="a3-highgpu-8g", oauth_scopes=SCOPES, gcfs_config=T.GcfsConfig(enabled=True),
        accelerators=[T.AcceleratorConfig(
            accelerator_type="nvidia-h100-80gb", accelerator_count=8,
            gpu_driver_installation_config=T.GPUDriverInstallationConfig(
                gpu_driver_version=T.GPUDriverInstallationConfig.GPUDriverVersion.LATEST))])
    return T.NodePool(name=name, initial_node_count=nodes, locations=[ZONE], config=config)


def wait_op(client: container_v1.ClusterManagerClient, op: T.Operation, timeout_s: float = 15.0) -> T.Operation:
    """Poll the operation until DONE (real seconds), as a GKE client must (no LRO .result())."""
    name = f"{PARENT}/operations/{op.name}"
    return wait_for(lambda: (o := client.get_operation(name=name)).status == DONE and o, timeout_s,
                    what=f"operation {op.name}")


def cluster_name(name: str = "kuberay-gpu-cluster") -> str:
    return f"{PARENT}/clusters/{name}"


def running_cluster(client: container_v1.ClusterManagerClient, name: str = "kuberay-gpu-cluster") -> T.Cluster:
    op = wait_op(client, client.create_cluster(parent=PARENT, cluster=cluster_spec(name)))
    assert not op.error.message, op.error
    return client.get_cluster(name=cluster_name(name))


class RecordingHooks:
    """A Kubernetes side that only remembers what GKE told it (a real ClusterHooks implementation)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def _record(self, name: str, detail: Any) -> None:
        with self._lock:
            self.calls.append((name, detail))

    def cluster_provisioning(self, cluster: ClusterRef) -> KubeEndpoint:
        self._record("cluster_provisioning", cluster.name)
        return KubeEndpoint(endpoint="127.0.0.1:6443",
                            ca_certificate_pem="-----BEGIN CERTIFICATE-----\nsandbox\n-----END CERTIFICATE-----\n")

    def node_pool_running(self, cluster: ClusterRef, node_pool: dict[str, Any], node_names: list[str]) -> None:
        self._record("node_pool_running", (node_pool["name"], tuple(node_names)))

    def node_pool_deleted(self, cluster: ClusterRef, pool_name: str) -> None:
        self._record("node_pool_deleted", pool_name)

    def cluster_deleted(self, cluster: ClusterRef) -> None:
        self._record("cluster_deleted", cluster.name)

    def inventory(self, cluster: ClusterRef) -> dict[str, Any]:
        return {"recorded_calls": len(self.calls)}

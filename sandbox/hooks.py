"""The seam between the simulated GKE control plane and each cluster's simulated Kubernetes.

The GKE simulator calls these when its objects change state; the Kubernetes side (API server,
nodes, scheduler, KubeRay, Ray Serve) implements them. `NoKubernetes` lets the GKE side run alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ClusterRef:
    project: str
    location: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.project}/{self.location}/{self.name}"


@dataclass(frozen=True)
class KubeEndpoint:
    """Where a cluster's Kubernetes API listens, as GKE reports it."""

    endpoint: str            # "127.0.0.1:PORT" (GKE's `Cluster.endpoint` is a bare host[:port])
    ca_certificate_pem: str  # PEM; GKE puts it base64-encoded in masterAuth.clusterCaCertificate


class ClusterHooks(Protocol):
    def cluster_provisioning(self, cluster: ClusterRef) -> KubeEndpoint:
        """The control plane is being created: start its API server and return where it listens."""

    def node_pool_running(self, cluster: ClusterRef, node_pool: dict[str, Any],
                          node_names: list[str]) -> None:
        """A node pool's VMs exist: register `node_names` as Nodes (GPU capacity after the driver)."""

    def node_pool_deleted(self, cluster: ClusterRef, pool_name: str) -> None:
        """A node pool's VMs are gone: remove its Nodes; their pods fail."""

    def cluster_deleted(self, cluster: ClusterRef) -> None:
        """The cluster is gone: stop its API server and forget its objects."""

    def inventory(self, cluster: ClusterRef) -> dict[str, Any]:
        """Kubernetes objects of the cluster for `GET /_sandbox/inventory` (kind -> names/states)."""


class NoKubernetes:
    """Hooks for a GKE-only sandbox: clusters report an endpoint that nothing serves."""

    def cluster_provisioning(self, cluster: ClusterRef) -> KubeEndpoint:
        return KubeEndpoint(endpoint="127.0.0.1:1", ca_certificate_pem="")

    def node_pool_running(self, cluster: ClusterRef, node_pool: dict[str, Any],
                          node_names: list[str]) -> None:
        return None

    def node_pool_deleted(self, cluster: ClusterRef, pool_name: str) -> None:
        return None

    def cluster_deleted(self, cluster: ClusterRef) -> None:
        return None

    def inventory(self, cluster: ClusterRef) -> dict[str, Any]:
        return {}

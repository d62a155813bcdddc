"""`ClusterHooks` for the GKE simulator: one `KubeCluster` per GKE cluster, created while the cluster
provisions and stopped when it is deleted; node pool changes become Nodes coming and going.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef, KubeEndpoint
from sandbox.kube.cluster import KubeCluster
from sandbox.kube.controllers.nodes import add_node_pool_nodes, remove_node_pool_nodes


class KubeClusters:
    """Implements sandbox.hooks.ClusterHooks. Thread-safe; idempotent per cluster."""

    def __init__(self, clock: ScaledClock, profile: dict[str, Any], faults: Faults, *,
                 controllers: Sequence[type] | None = None):
        self.clock, self.profile, self.faults = clock, profile, faults
        self._controllers = controllers
        self._lock = threading.Lock()
        self._clusters: dict[str, KubeCluster] = {}

    def get(self, cluster: ClusterRef) -> KubeCluster | None:
        with self._lock:
            return self._clusters.get(cluster.key)

    def all(self) -> list[KubeCluster]:
        with self._lock:
            return list(self._clusters.values())

    def cluster_provisioning(self, cluster: ClusterRef) -> KubeEndpoint:
        with self._lock:
            existing = self._clusters.get(cluster.key)
            if existing is None:
                existing = KubeCluster(cluster, clock=self.clock, profile=self.profile, faults=self.faults,
                                       controllers=self._controllers)
                existing.start()
                self._clusters[cluster.key] = existing
        return KubeEndpoint(endpoint=existing.endpoint, ca_certificate_pem=existing.ca_pem)

    def node_pool_running(self, cluster: ClusterRef, node_pool: dict[str, Any], node_names: list[str]) -> None:
        if (kube := self.get(cluster)) is not None:
            add_node_pool_nodes(kube.ctx, node_pool, node_names)

    def node_pool_deleted(self, cluster: ClusterRef, pool_name: str) -> None:
        if (kube := self.get(cluster)) is not None:
            remove_node_pool_nodes(kube.ctx, pool_name)

    def cluster_deleted(self, cluster: ClusterRef) -> None:
        with self._lock:
            kube = self._clusters.pop(cluster.key, None)
        if kube is not None:
            kube.stop()

    def inventory(self, cluster: ClusterRef) -> dict[str, Any]:
        kube = self.get(cluster)
        return kube.inventory() if kube is not None else {}

    def stop(self) -> None:
        """Stop every cluster's API server and controllers (sandbox shutdown)."""
        with self._lock:
            clusters, self._clusters = list(self._clusters.values()), {}
        for kube in clusters:
            kube.stop()

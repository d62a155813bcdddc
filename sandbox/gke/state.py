"""The GKE control plane's records: clusters, their node pools, and operations, behind one lock.

Each record keeps the resource as GKE returns it (`resource`, canonical proto3 JSON with enum names)
plus what the simulation needs beside it (the machine, node names, the operation holding a cluster).
The HTTP handlers and the clock's timer thread both change records, always under `GkeState.lock`.
"""

from __future__ import annotations

import random
import string
import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.gke.catalog import Machine
from sandbox.hooks import ClusterRef

API_ROOT = "https://container.googleapis.com/v1"


@dataclass
class PoolRecord:
    """A node pool as stored, its machine, zones, instance groups and VM names."""
    resource: dict[str, Any]
    machine: Machine
    zones: list[str]
    groups: list[str]                      # one managed instance group per zone: gke-<cluster>-<pool>-<hash>
    node_names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def node_count(self) -> int:
        return int(self.resource.get("initialNodeCount", 0)) * len(self.zones)


@dataclass
class ClusterRecord:
    """A cluster as stored, its pools in creation order, and the operation holding it."""
    ref: ClusterRef
    resource: dict[str, Any]                      # without nodePools; see `rendered`
    pools: dict[str, PoolRecord] = field(default_factory=dict)
    busy: OperationRecord | None = None           # GKE runs one cluster-level operation at a time

    def rendered(self) -> dict[str, Any]:
        """The Cluster as GKE returns it, node pools included and the node count up to date."""
        pools = [p.resource for p in self.pools.values()]
        running = sum(p.node_count for p in self.pools.values() if p.resource.get("status") == "RUNNING")
        cluster = dict(self.resource, nodePools=pools, currentNodeCount=running)
        if pools and "config" in pools[0]:
            cluster["nodeConfig"] = pools[0]["config"]   # deprecated mirror of the first pool, as GKE does
        return cluster


@dataclass
class OperationRecord:
    """An operation as GKE returns it, and the cluster it belongs to."""
    project: str
    location: str
    cluster: str
    resource: dict[str, Any]
    started_s: float = 0.0          # simulated elapsed seconds at the start; its timeline counts from here

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def done(self) -> bool:
        return self.resource["status"] == "DONE"


class GkeState:
    """All clusters and operations of the sandbox, and a seeded source of ids and node names."""

    def __init__(self, seed: int = 0):
        self.lock = threading.RLock()
        self.clusters: dict[str, ClusterRecord] = {}        # ClusterRef.key -> record
        self.operations: dict[str, OperationRecord] = {}    # operation name -> record
        self._rng = random.Random(seed)

    def cluster(self, project: str, location: str, name: str) -> ClusterRecord | None:
        """The cluster record, or None."""
        return self.clusters.get(ClusterRef(project, location, name).key)

    def clusters_in(self, project: str, location: str) -> list[ClusterRecord]:
        """Clusters of `project` in `location` ("-" means every location), in creation order."""
        return [c for c in self.clusters.values()
                if c.ref.project == project and location in ("-", c.ref.location)]

    def operations_in(self, project: str, location: str) -> list[OperationRecord]:
        """Operations of `project` in `location` ("-" means every location), oldest first."""
        return [o for o in self.operations.values()
                if o.project == project and location in ("-", o.location)]

    # -- ids ------------------------------------------------------------------------------------
    def hex_id(self, length: int) -> str:
        """Random hex characters from the seeded source (ids repeat run to run for the same seed)."""
        with self.lock:
            return "".join(self._rng.choice("0123456789abcdef") for _ in range(length))

    def operation_name(self, epoch_s: float) -> str:
        """GKE's operation id shape: `operation-<epoch ms>-<hex>`."""
        return f"operation-{int(epoch_s * 1000)}-{self.hex_id(8)}"

    def instance_groups(self, cluster: str, pool: str, zones: list[str]) -> list[str]:
        """GKE's instance group base names, one per zone: gke-<cluster>-<pool>-<hash> (names truncated)."""
        with self.lock:
            return [f"gke-{cluster[:20].rstrip('-')}-{pool[:20].rstrip('-')}-{self.hex_id(8)}" for _ in zones]

    def node_names(self, groups: list[str], per_zone: int) -> list[str]:
        """Node (VM) names as the instance groups make them: <group>-<4 random characters>."""
        alphabet = string.ascii_lowercase + string.digits
        with self.lock:
            return [f"{group}-{''.join(self._rng.choice(alphabet) for _ in range(4))}"
                    for group in groups for _ in range(per_zone)]


def link(project: str, location: str, *parts: str) -> str:
    """A selfLink/targetLink as GKE writes them (zonal resources under `zones/`)."""
    kind = "zones" if location[-2:-1] == "-" else "locations"
    return "/".join([API_ROOT, "projects", project, kind, location, *parts])

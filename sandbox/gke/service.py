"""The GKE API's semantics: create/get/list/delete of clusters and node pools, operations, server config.

Methods take what the URL and body carry and return the stored resource (canonical JSON) or raise a
`GkeError`; `routes` renders results for the API version the client called. Synchronous checks run in
GKE's order: the body (400), the parent (404), existence (409), injected concurrent-operation quota
(429), a busy cluster (400 FAILED_PRECONDITION), quota (403). Stockouts show up later, in the operation.
"""

from __future__ import annotations

import base64
from typing import Any

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.gke import catalog, errors, identity, resources, wire
from sandbox.gke.billing import Meter
from sandbox.gke.operations import Lifecycle
from sandbox.gke.state import ClusterRecord, GkeState, PoolRecord
from sandbox.hooks import ClusterHooks, ClusterRef

_DOING = {"CREATE_CLUSTER": "creating cluster {}", "DELETE_CLUSTER": "deleting cluster {}",
          "CREATE_NODE_POOL": "creating a node pool for cluster {}",
          "DELETE_NODE_POOL": "deleting a node pool for cluster {}",
          "SET_LABELS": "setting labels on cluster {}", "UPGRADE_NODES": "updating a node pool of cluster {}",
          "UPGRADE_MASTER": "upgrading cluster {}"}
# UpdateNodePoolRequest fields the sandbox carries out (identity fields aside); others answer 400.
_POOL_UPDATES = {"resourceLabels", "labels"}
_POOL_IDENTITY = {"name", "projectId", "zone", "clusterId", "nodePoolId"}


class GkeService:
    """Clusters, node pools and operations of one simulated GKE, on the sandbox's clock and faults."""

    def __init__(self, clock: ScaledClock, profile: dict[str, Any], faults: Faults, hooks: ClusterHooks,
                 seed: int = 0):
        self.clock, self.profile, self.faults, self.hooks = clock, profile, faults, hooks
        self.state = GkeState(seed)
        self.meter = Meter(clock, profile.get("prices_per_hour", {}))
        self.lifecycle = Lifecycle(self.state, clock, profile, hooks, self.meter, faults)
        self.versions: dict[str, str] = profile["versions"]

    # -- clusters -------------------------------------------------------------------------------
    def create_cluster(self, version: str, project: str, location: str, body: bytes) -> dict[str, Any]:
        """`clusters.create`: validate, reserve the name, start CREATE_CLUSTER; return the Operation."""
        catalog.check_location(location)
        request = wire.parse_request(version, "CreateClusterRequest", body)
        spec = wire.to_stored(request.cluster)
        catalog.check_name("cluster.name", spec.get("name", ""))
        identity.check_cluster(project, spec)
        zones = spec.get("locations") or catalog.default_zones(location)
        pools = [self._pool_record(f"cluster.nodePools[{i}]", project, location, spec["name"],
                                   identity.node_pool_config(spec, p, f"cluster.nodePools[{i}]"), zones)
                 for i, p in enumerate(_initial_pools(spec))]
        ref = ClusterRef(project, location, spec["name"])
        with self.state.lock:
            if self.state.clusters.get(ref.key):
                raise errors.already_exists(resources.resource_name(project, location, ref.name))
            self._check_op_quota(ref)
            for pool in pools:
                self._check_quota(ref, pool)
            stockouts = {p.name: f for p in pools if (f := self._stockout(ref, p))}
            resource = resources.new_cluster(project, location, spec, zones, self.state.hex_id(32),
                                             self.clock.rfc3339(), self.versions)
            cluster = ClusterRecord(ref, resource, {p.name: p for p in pools})
            self.state.clusters[ref.key] = cluster
            op = self.lifecycle.start(cluster, "CREATE_CLUSTER", resource["selfLink"])
        endpoint = self.lifecycle.hook("cluster_provisioning", ref)
        with self.state.lock:
            if endpoint is None:
                self.lifecycle.fail_cluster(cluster, op, "Internal error: the control plane did not start.")
                return dict(op.resource)
            ca = base64.b64encode(endpoint.ca_certificate_pem.encode()).decode()
            cluster.resource.update(endpoint=endpoint.endpoint, masterAuth={"clusterCaCertificate": ca})
        self.lifecycle.play_cluster_create(cluster, op, stockouts)
        return dict(op.resource)

    def get_cluster(self, project: str, location: str, name: str) -> dict[str, Any]:
        """`clusters.get`: the Cluster with its node pools, or 404."""
        with self.state.lock:
            return self._cluster(project, location, name).rendered()

    def list_clusters(self, project: str, location: str) -> dict[str, Any]:
        """`clusters.list` in one location or every one (`-`)."""
        with self.state.lock:
            return {"clusters": [c.rendered() for c in self.state.clusters_in(project, location)]}

    def delete_cluster(self, project: str, location: str, name: str) -> dict[str, Any]:
        """`clusters.delete`: STOPPING now, gone (VMs, Kubernetes) when the Operation is DONE."""
        with self.state.lock:
            cluster = self._cluster(project, location, name)
            self._check_mutable(cluster)
            op = self.lifecycle.start(cluster, "DELETE_CLUSTER", cluster.resource["selfLink"])
            cluster.resource["status"] = "STOPPING"
            for pool in cluster.pools.values():
                pool.resource["status"] = "STOPPING"
        self.lifecycle.play_cluster_delete(cluster, op)
        return dict(op.resource)

    # -- node pools -----------------------------------------------------------------------------
    def create_node_pool(self, version: str, project: str, location: str, cluster_name: str,
                         body: bytes) -> dict[str, Any]:
        """`nodePools.create` (v1 or v1beta1 body): start CREATE_NODE_POOL; return the Operation."""
        request = wire.parse_request(version, "CreateNodePoolRequest", body)
        spec = wire.to_stored(request.node_pool)
        with self.state.lock:
            cluster = self._cluster(project, location, cluster_name)
            spec = identity.node_pool_config(cluster.resource, spec, "nodePool")
            pool = self._pool_record("nodePool", project, location, cluster_name, spec,
                                     cluster.resource["locations"])
            if pool.name in cluster.pools:
                raise errors.already_exists(resources.resource_name(project, location, cluster_name, pool.name))
            self._check_mutable(cluster)
            self._check_quota(cluster.ref, pool)
            stockout = self._stockout(cluster.ref, pool)
            cluster.pools[pool.name] = pool
            op = self.lifecycle.start(cluster, "CREATE_NODE_POOL", pool.resource["selfLink"])
        self.lifecycle.play_pool_create(cluster, pool, op, stockout)
        return dict(op.resource)

    def get_node_pool(self, project: str, location: str, cluster_name: str, name: str) -> dict[str, Any]:
        """`nodePools.get`, or 404 for a missing pool or cluster."""
        with self.state.lock:
            return dict(self._pool(self._cluster(project, location, cluster_name), name).resource)

    def list_node_pools(self, project: str, location: str, cluster_name: str) -> dict[str, Any]:
        """`nodePools.list` of one cluster."""
        with self.state.lock:
            cluster = self._cluster(project, location, cluster_name)
            return {"nodePools": [dict(p.resource) for p in cluster.pools.values()]}

    def delete_node_pool(self, project: str, location: str, cluster_name: str, name: str) -> dict[str, Any]:
        """`nodePools.delete`: STOPPING now, gone and unbilled when the Operation is DONE."""
        with self.state.lock:
            cluster = self._cluster(project, location, cluster_name)
            pool = self._pool(cluster, name)
            self._check_mutable(cluster)
            op = self.lifecycle.start(cluster, "DELETE_NODE_POOL", pool.resource["selfLink"])
            pool.resource["status"] = "STOPPING"
        self.lifecycle.play_pool_delete(cluster, pool, op)
        return dict(op.resource)

    # -- labels: short operations that hold the cluster, as GKE's do ----------------------------
    def set_cluster_labels(self, version: str, project: str, location: str, name: str,
                           body: bytes) -> dict[str, Any]:
        """`clusters.setResourceLabels`: replace the labels if the fingerprint is current."""
        request = wire.parse_request(version, "SetLabelsRequest", body)
        with self.state.lock:
            cluster = self._cluster(project, location, name)
            if request.label_fingerprint != cluster.resource.get("labelFingerprint", ""):
                raise errors.precondition("Labels could not be set due to fingerprint mismatch. Get the cluster "
                                          "again and retry with its current labelFingerprint.")
            self._check_mutable(cluster)
            labels = dict(request.resource_labels)
            cluster.resource.update(resourceLabels=labels, labelFingerprint=resources.fingerprint(labels)[:8])
            op = self.lifecycle.start(cluster, "SET_LABELS", cluster.resource["selfLink"])
        self.lifecycle.play_quick(op)
        return dict(op.resource)

    def update_node_pool(self, version: str, project: str, location: str, cluster_name: str, name: str,
                         body: bytes) -> dict[str, Any]:
        """`nodePools.update` for labels (GCE resource labels, Kubernetes node labels) only."""
        changes = wire.to_stored(wire.parse_request(version, "UpdateNodePoolRequest", body))
        unsupported = sorted(set(changes) - _POOL_UPDATES - _POOL_IDENTITY)
        if unsupported or not set(changes) & _POOL_UPDATES:
            raise errors.invalid(f"The GKE sandbox updates only {sorted(_POOL_UPDATES)} of a node pool; "
                                 f"got {sorted(set(changes) - _POOL_IDENTITY) or 'nothing to update'}.")
        with self.state.lock:
            cluster = self._cluster(project, location, cluster_name)
            pool = self._pool(cluster, name)
            self._check_mutable(cluster)
            config = pool.resource.setdefault("config", {})
            for key in sorted(set(changes) & _POOL_UPDATES):
                config[key] = dict(changes[key].get("labels", {}))
            pool.resource["etag"] = resources.fingerprint(pool.resource)
            op = self.lifecycle.start(cluster, "UPGRADE_NODES", pool.resource["selfLink"])
        self.lifecycle.play_quick(op)
        return dict(op.resource)

    # -- operations and config ------------------------------------------------------------------
    def get_operation(self, project: str, location: str, name: str) -> dict[str, Any]:
        """`operations.get`, or 404 when no such operation in that project and location."""
        with self.state.lock:
            op = self.state.operations.get(name)
            if op is None or op.project != project or location not in ("-", op.location):
                raise errors.not_found(f"operation {name}")
            return dict(op.resource)

    def list_operations(self, project: str, location: str) -> dict[str, Any]:
        """`operations.list` in one location or every one (`-`), oldest first."""
        with self.state.lock:
            return {"operations": [dict(o.resource) for o in self.state.operations_in(project, location)]}

    def server_config(self, project: str, location: str) -> dict[str, Any]:
        """`getServerConfig`: the versions this simulated GKE offers."""
        catalog.check_location(location)
        return resources.server_config(self.versions)

    # -- inventory ------------------------------------------------------------------------------
    def inventory(self) -> dict[str, Any]:
        """Clusters, pools (status, nodes, bill so far), Kubernetes objects, and the whole bill."""
        with self.state.lock:
            clusters = [(c.ref, _summary(c)) for c in self.state.clusters.values()]
        for ref, summary in clusters:       # the meter and the Kubernetes side have their own locks
            for pool in summary["node_pools"]:
                pool.update(self.meter.pool_report(ref.key, pool["name"]))
            summary["kubernetes"] = self.lifecycle.hook("inventory", ref) or {}
        return {"clusters": [summary for _, summary in clusters], "billing": self.meter.report()}

    # -- checks ---------------------------------------------------------------------------------
    def _cluster(self, project: str, location: str, name: str) -> ClusterRecord:
        cluster = self.state.cluster(project, location, name)
        if cluster is None:
            raise errors.not_found(resources.resource_name(project, location, name))
        return cluster

    def _pool(self, cluster: ClusterRecord, name: str) -> PoolRecord:
        pool = cluster.pools.get(name)
        if pool is None:
            ref = cluster.ref
            raise errors.not_found(resources.resource_name(ref.project, ref.location, ref.name, name))
        return pool

    def _pool_record(self, field: str, project: str, location: str, cluster: str, spec: dict[str, Any],
                     cluster_zones: list[str]) -> PoolRecord:
        catalog.check_name(f"{field}.name", spec.get("name", ""))
        machine = catalog.machine_of(f"{field}.config", spec.get("config", {}))
        zones = spec.get("locations") or cluster_zones
        region = catalog.region_of(location)
        for zone in zones:
            if catalog.region_of(zone) != region or zone == region:
                raise errors.invalid(f'Invalid value for field "{field}.locations": "{zone}" is not a zone '
                                     f'of the cluster\'s region "{region}".')
        autoscaling = spec.get("autoscaling", {}).get("enabled", False)
        if int(spec.get("initialNodeCount", 0)) < (0 if autoscaling else 1):
            raise errors.invalid(f'Invalid value for field "{field}.initialNodeCount": '
                                 f'{spec.get("initialNodeCount", 0)}. Must be greater than zero.')
        groups = self.state.instance_groups(cluster, spec["name"], zones)
        resource = resources.new_pool(project, location, cluster, spec, zones, groups, self.versions)
        return PoolRecord(resource, machine, zones, groups)

    def _check_mutable(self, cluster: ClusterRecord) -> None:
        """One cluster-level operation at a time (caller holds the lock)."""
        ref = cluster.ref
        self._check_op_quota(ref)
        if self.faults.take("busy_cluster", project=ref.project, location=ref.location, cluster=ref.name):
            fake = self.state.operation_name(self.clock.now())
            raise errors.busy(fake, f"upgrading cluster {ref.name}")
        if cluster.busy is not None:
            op = cluster.busy
            raise errors.busy(op.name, _DOING[op.resource["operationType"]].format(ref.name))

    def _check_op_quota(self, ref: ClusterRef) -> None:
        if self.faults.take("concurrent_ops_quota", project=ref.project, location=ref.location,
                            cluster=ref.name):
            raise errors.too_many_operations(ref.name)

    def _check_quota(self, ref: ClusterRef, pool: PoolRecord) -> None:
        nodes, machine = pool.node_count, pool.machine
        wants = ([(machine.gpu_quota_metric, float(machine.gpus * nodes))] if machine.gpus else []) + \
            [("CPUS", float(machine.vcpus * nodes))]
        for metric, requested in wants:
            fault = self.faults.take("quota", project=ref.project, location=ref.location, cluster=ref.name,
                                     node_pool=pool.name, metric=metric)
            if fault:
                raise errors.quota_exceeded(ref.project, metric, requested, float(fault.get("limit", 0)))

    def _stockout(self, ref: ClusterRef, pool: PoolRecord) -> dict[str, Any] | None:
        """Whether this GPU pool's VMs will not fit in its zone (decided now, reported by the op)."""
        if not pool.machine.gpus:
            return None
        return self.faults.take("stockout", project=ref.project, cluster=ref.name, node_pool=pool.name,
                                zone=pool.zones[0], machine_type=pool.machine.machine_type,
                                capacity=catalog.capacity_of(pool.resource))


def _initial_pools(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The cluster's node pools, or the deprecated initialNodeCount/nodeConfig as `default-pool`."""
    if spec.get("nodePools"):
        return spec["nodePools"]
    if int(spec.get("initialNodeCount", 0)) > 0:
        return [{"name": "default-pool", "initialNodeCount": spec["initialNodeCount"],
                 "config": spec.get("nodeConfig", {})}]
    raise errors.invalid('Invalid value for field "cluster.nodePools": a cluster needs at least one node '
                         "pool (or cluster.initialNodeCount > 0).")


def _summary(cluster: ClusterRecord) -> dict[str, Any]:
    """A cluster and its pools for the inventory (caller holds the lock)."""
    ref, resource = cluster.ref, cluster.resource
    pools = [{"name": p.name, "status": p.resource["status"], "machine_type": p.machine.machine_type,
              "accelerator": p.machine.accelerator, "gpus_per_node": p.machine.gpus,
              "capacity": catalog.capacity_of(p.resource), "node_count": p.node_count,
              "nodes": list(p.node_names), "resource_labels": p.resource.get("config", {}).get("resourceLabels", {})}
             for p in cluster.pools.values()]
    return {"project": ref.project, "location": ref.location, "name": ref.name, "status": resource.get("status"),
            "endpoint": resource.get("endpoint", ""), "resource_labels": resource.get("resourceLabels", {}),
            "operation_in_progress": cluster.busy.name if cluster.busy else None, "node_pools": pools}

"""Long-running operations and what they do over simulated time: the life of clusters and node pools.

Every create or delete returns an Operation at once and then plays a timeline on the scaled clock:
PENDING -> RUNNING -> DONE, with the resource's status, VM creation (billing), node registration
(the Kubernetes hooks) and deletion at the times the profile gives. Timer callbacks run on the clock's
single timer thread, in order; they change records under the state lock and call the Kubernetes hooks
outside it, so a slow hook never blocks the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.gke.billing import Meter
from sandbox.gke.state import ClusterRecord, GkeState, OperationRecord, PoolRecord, link
from sandbox.hooks import ClusterHooks

log = logging.getLogger("sandbox.gke")

# google.rpc.Code values used in operation errors.
RESOURCE_EXHAUSTED = 8
INTERNAL = 13


class Lifecycle:
    """Start operations and play their timelines; the only writer of statuses after a create call."""

    def __init__(self, state: GkeState, clock: ScaledClock, profile: dict[str, Any], hooks: ClusterHooks,
                 meter: Meter, faults: Faults | None = None):
        self.state, self.clock, self.profile, self.hooks, self.meter = state, clock, profile, hooks, meter
        self.faults = faults
        self._due = threading.local()

    # -- operations -----------------------------------------------------------------------------
    def start(self, cluster: ClusterRecord, op_type: str, target: str) -> OperationRecord:
        """Record a new PENDING operation holding `cluster` (caller holds the lock)."""
        ref = cluster.ref
        name = self.state.operation_name(self.clock.now())
        resource = {"name": name, "zone": ref.location, "location": ref.location, "operationType": op_type,
                    "status": "PENDING", "selfLink": link(ref.project, ref.location, "operations", name),
                    "targetLink": target}
        started = self.now_s()
        resource["startTime"] = self.rfc3339(started)
        op = OperationRecord(ref.project, ref.location, ref.name, resource, started_s=started)
        self.state.operations[name] = op
        cluster.busy = op
        self.after(op, self.profile["operation_pending_s"], lambda: self._running(op))
        return op

    def _running(self, op: OperationRecord) -> None:
        with self.state.lock:
            if op.resource["status"] == "PENDING":
                op.resource["status"] = "RUNNING"

    def finish(self, op: OperationRecord, error: str = "", code: int = 0,
               conditions: list[dict[str, Any]] | None = None) -> None:
        """Mark `op` DONE (with an error if given) and free its cluster (caller holds the lock)."""
        op.resource.update(status="DONE", endTime=self.rfc3339())
        if error:
            # gcloud reads statusMessage; the client library reads error; both carry the text.
            op.resource.update(statusMessage=error, error={"code": code, "message": error})
            key = "nodepoolConditions" if op.resource["operationType"].endswith("NODE_POOL") else \
                "clusterConditions"
            op.resource[key] = conditions or [{"code": "UNKNOWN", "message": error}]
        cluster = self.state.cluster(op.project, op.location, op.cluster)
        if cluster is not None and cluster.busy is op:
            cluster.busy = None

    def after(self, op: OperationRecord, sim_s: float, callback: Callable[[], None]) -> None:
        """Run `callback` `sim_s` simulated seconds after `op` started; inside it, `now_s()` is that
        due time (so an operation's timestamps and bill follow the profile exactly)."""
        due = op.started_s + max(0.0, float(sim_s))

        def run() -> None:
            self._due.at = due
            try:
                callback()
            finally:
                self._due.at = None

        self.clock.call_at(due, run)

    def now_s(self) -> float:
        """Simulated elapsed seconds of the event being played (its scheduled time, not when the busy
        timer thread got to it), so bills and timestamps do not depend on the host's load."""
        at = getattr(self._due, "at", None)
        return self.clock.elapsed_s() if at is None else at

    def rfc3339(self, elapsed_s: float | None = None) -> str:
        """Simulated elapsed second `elapsed_s` (default `now_s()`) as an RFC 3339 timestamp."""
        at = self.now_s() if elapsed_s is None else elapsed_s
        return self.clock.rfc3339(self.clock.now() - self.clock.elapsed_s() + at)

    # -- VMs and nodes --------------------------------------------------------------------------
    def vms_up(self, cluster: ClusterRecord, pool: PoolRecord, count: int | None = None) -> None:
        """Create the pool's VMs (all, or the first `count`): billing starts now."""
        per_zone = int(pool.resource.get("initialNodeCount", 0))
        with self.state.lock:
            if self.state.clusters.get(cluster.ref.key) is not cluster or pool.name not in cluster.pools \
                    or pool.resource.get("status") != "PROVISIONING":
                return      # the create already ended (stockout) or the pool is going away
            if not pool.node_names:
                pool.node_names = self.state.node_names(pool.groups, per_zone)
            names = pool.node_names if count is None else pool.node_names[:count]
            pool.node_names = names
        self.meter.vms_started(cluster.ref.key, pool.name, pool.machine.machine_type, pool.machine.gpus, names,
                               at=self.now_s())

    def nodes_registered(self, cluster: ClusterRecord, pool: PoolRecord) -> None:
        """The pool's VMs have booted: the Kubernetes side registers them as Nodes."""
        with self.state.lock:
            if self.state.clusters.get(cluster.ref.key) is not cluster or pool.name not in cluster.pools:
                return
            names, resource = list(pool.node_names), dict(pool.resource)
        if names:
            self.hook("node_pool_running", cluster.ref, resource, names)

    def vms_down(self, cluster: ClusterRecord, pool: PoolRecord) -> None:
        """Delete every VM of the pool: billing stops now."""
        self.meter.vms_deleted(cluster.ref.key, pool.name, at=self.now_s())

    def hook(self, name: str, *args: Any) -> Any:
        """Call a Kubernetes-side hook; log and return None if it fails."""
        try:
            return getattr(self.hooks, name)(*args)
        except Exception:  # noqa: BLE001 - a broken Kubernetes side must not wedge the GKE side
            log.exception("Kubernetes hook %s failed", name)
            return None

    # -- timelines ------------------------------------------------------------------------------
    def play_cluster_create(self, cluster: ClusterRecord, op: OperationRecord,
                            stockouts: dict[str, dict[str, Any]]) -> None:
        """Control plane, then the initial pools' VMs and nodes, then RUNNING (or ERROR on stockout)."""
        timing = self.profile["cluster"]
        for pool in list(cluster.pools.values()):
            self.after(op, timing["default_pool_vms_after_s"], lambda p=pool: self.vms_up(
                cluster, p, stockouts[p.name].get("created", 0) if p.name in stockouts else None))
            self.after(op, timing["default_pool_nodes_after_s"], lambda p=pool: self.nodes_registered(cluster, p))
        if stockouts:
            after = min(timing["create_s"], self.profile["node_pool"]["stockout_after_s"])
            self.after(op, after, lambda: self._cluster_stocked_out(cluster, op, stockouts))
        else:
            self.after(op, timing["create_s"], lambda: self._cluster_created(cluster, op))

    def _cluster_created(self, cluster: ClusterRecord, op: OperationRecord) -> None:
        with self.state.lock:
            cluster.resource["status"] = "RUNNING"
            for pool in cluster.pools.values():
                pool.resource["status"] = "RUNNING"
            self.finish(op)
            ref = cluster.ref
            upgrade = self.faults and self.faults.take("auto_upgrade", project=ref.project,
                                                       location=ref.location, cluster=ref.name)
            if upgrade:
                self._auto_upgrade(cluster, float(upgrade.get("duration_s", 120)))

    def _auto_upgrade(self, cluster: ClusterRecord, duration_s: float) -> None:
        """GKE's own master upgrade right after create: RECONCILING, and the cluster is busy meanwhile
        (gke.md section 7: node pool creates after a cluster create need the busy-retry)."""
        op = self.start(cluster, "UPGRADE_MASTER", cluster.resource["selfLink"])
        cluster.resource["status"] = "RECONCILING"

        def upgraded() -> None:
            with self.state.lock:
                if cluster.resource["status"] == "RECONCILING":
                    cluster.resource["status"] = "RUNNING"
                self.finish(op)

        self.after(op, duration_s, upgraded)

    def fail_cluster(self, cluster: ClusterRecord, op: OperationRecord, message: str) -> None:
        """End a cluster create in ERROR (caller holds the lock)."""
        cluster.resource.update(status="ERROR", statusMessage=message)
        for pool in cluster.pools.values():
            pool.resource["status"] = "ERROR"
        self.finish(op, message, INTERNAL)

    def _cluster_stocked_out(self, cluster: ClusterRecord, op: OperationRecord,
                             stockouts: dict[str, dict[str, Any]]) -> None:
        with self.state.lock:
            messages = [self._stock_out_pool(cluster, cluster.pools[name], fault)
                        for name, fault in stockouts.items()]
            cluster.resource.update(status="ERROR", statusMessage=messages[0])
            for pool in cluster.pools.values():
                if pool.name not in stockouts:
                    pool.resource["status"] = "RUNNING"
            self.finish(op, messages[0], RESOURCE_EXHAUSTED,
                        [{"code": "GCE_STOCKOUT", "message": m, "canonicalCode": "RESOURCE_EXHAUSTED"}
                         for m in messages])

    def play_pool_create(self, cluster: ClusterRecord, pool: PoolRecord, op: OperationRecord,
                         stockout: dict[str, Any] | None) -> None:
        """VMs (billing), nodes (hooks), then RUNNING; or, on stockout, DONE with GCE_STOCKOUT."""
        timing = self.profile["node_pool"]["gpu" if pool.machine.gpus else "cpu"]
        created = None if stockout is None else int(stockout.get("created", 0))
        # A partial stockout brings its few VMs up before the operation gives up.
        last = float("inf") if stockout is None else self.profile["node_pool"]["stockout_after_s"]
        if created != 0:
            self.after(op, min(timing["vms_after_s"], last), lambda: self.vms_up(cluster, pool, created))
            self.after(op, min(timing["nodes_after_s"], last), lambda: self.nodes_registered(cluster, pool))
        if stockout is None:
            self.after(op, timing["done_after_s"], lambda: self._pool_created(cluster, pool, op))
        else:
            self.after(op, self.profile["node_pool"]["stockout_after_s"],
                       lambda: self._pool_stocked_out(cluster, pool, op, stockout))

    def _pool_created(self, cluster: ClusterRecord, pool: PoolRecord, op: OperationRecord) -> None:
        with self.state.lock:
            pool.resource["status"] = "RUNNING"
            self.finish(op)

    def _pool_stocked_out(self, cluster: ClusterRecord, pool: PoolRecord, op: OperationRecord,
                          fault: dict[str, Any]) -> None:
        with self.state.lock:
            message = self._stock_out_pool(cluster, pool, fault)
            self.finish(op, message, RESOURCE_EXHAUSTED,
                        [{"code": "GCE_STOCKOUT", "message": message, "canonicalCode": "RESOURCE_EXHAUSTED"}])

    def _stock_out_pool(self, cluster: ClusterRecord, pool: PoolRecord, fault: dict[str, Any]) -> str:
        """Leave `pool` in ERROR with GKE's stockout text; return the text (caller holds the lock)."""
        expected, running = pool.node_count, int(fault.get("created", 0))
        zone = pool.zones[0]
        waited = self.profile["node_pool"]["stockout_after_s"]
        instance = (pool.node_names[running:] or [f"gke-{cluster.ref.name}-{pool.name}"])[0]
        message = (f"Google Compute Engine: Not all instances running in IGM after {waited // 60:.0f}m"
                   f"{waited % 60:.0f}s. Expected {expected}, running {running}, transitioning "
                   f"{expected - running}. Current errors: [GCE_STOCKOUT]: Instance '{instance}' creation "
                   f"failed: The zone 'projects/{cluster.ref.project}/zones/{zone}' does not have enough "
                   "resources available to fulfill the request.  Try a different zone, or try again later.")
        pool.resource.update(status="ERROR", statusMessage=message, conditions=[
            {"code": "GCE_STOCKOUT", "message": message, "canonicalCode": "RESOURCE_EXHAUSTED"}])
        return message

    def play_quick(self, op: OperationRecord) -> None:
        """A metadata-only operation (labels): DONE shortly after it starts running."""
        def done() -> None:
            with self.state.lock:
                self.finish(op)
        self.after(op, self.profile["operation_pending_s"] + self.profile.get("labels_update_s", 5), done)

    def play_pool_delete(self, cluster: ClusterRecord, pool: PoolRecord, op: OperationRecord) -> None:
        """VMs deleted, nodes removed and pool gone after the profile's delete time."""
        self.after(op, self.profile["node_pool"]["delete_s"], lambda: self._pool_deleted(cluster, pool, op))

    def _pool_deleted(self, cluster: ClusterRecord, pool: PoolRecord, op: OperationRecord) -> None:
        self.vms_down(cluster, pool)
        with self.state.lock:
            cluster.pools.pop(pool.name, None)
            self.finish(op)
        self.hook("node_pool_deleted", cluster.ref, pool.name)

    def play_cluster_delete(self, cluster: ClusterRecord, op: OperationRecord) -> None:
        """Every VM deleted, the Kubernetes side stopped and the cluster gone after the delete time."""
        self.after(op, self.profile["cluster"]["delete_s"], lambda: self._cluster_deleted(cluster, op))

    def _cluster_deleted(self, cluster: ClusterRecord, op: OperationRecord) -> None:
        for pool in list(cluster.pools.values()):
            self.vms_down(cluster, pool)
        with self.state.lock:
            if self.state.clusters.get(cluster.ref.key) is cluster:
                del self.state.clusters[cluster.ref.key]
            self.finish(op)
        self.hook("cluster_deleted", cluster.ref)

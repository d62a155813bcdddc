"""The RayService controller of the simulated KubeRay operator (`rayservice_controller.go` @ v1.7.0).

Order for a new RayService, as `reference/kuberay.md` §2 describes: finalizer; validation; pending
cluster name `<name>-<5 chars>`; the RayCluster (owned by the RayService, labelled
`ray.io/originated-from-cr-name` / `-crd`, annotated with the spec hash); once its `HeadPodReady` is
True, the JSON form of `serveConfigV2` is PUT to the head's dashboard and app statuses are read back
each pass; the head pod's `ray.io/serve` label follows the proxy's `/-/healthz`; when every app is
RUNNING, `<name>-head-svc` and `<name>-serve-svc` are created and the pending cluster is promoted to
active. Conditions `Ready` (Initializing -> NonZeroServeEndpoints) and `UpgradeInProgress`,
`numServeEndpoints`, `observedGeneration`, `serviceStatus` move as upstream. A `serveConfigV2`-only
change is re-PUT in place; another `rayClusterConfig` change starts a new pending cluster
(blue/green, unless `upgradeStrategy.type: None`); replica-only changes update the cluster in place.
Deleting the RayService deletes its RayClusters, then the finalizer goes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import yaml

from sandbox.kube import rayserve
from sandbox.kube.context import HttpRequest
from sandbox.kube.controllers import kuberay_services as services
from sandbox.kube.controllers.base import (
    CRDS,
    DEPLOYMENTS,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    Reconciler,
    owner_reference,
)
from sandbox.kube.controllers.deployments import random_suffix
from sandbox.kube.controllers.events import record_event
from sandbox.kube.controllers.operator import operator_active
from sandbox.kube.controllers.raycluster import cluster_status
from sandbox.kube.store import AlreadyExists, NotFound

COMPONENT = "rayservice-controller"
FINALIZER = "ray.io/rayservice-finalizer"
HASH_KEY = "ray.io/hash-without-replicas-and-workers-to-delete"
KUBERAY_VERSION = "v1.7.0"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def cluster_hash(config: dict[str, Any], groups: int | None = None) -> str:
    """Hash of a rayClusterConfig ignoring replica counts, workersToDelete, tolerations and
    schedulingGates (v1.7.0's `GenerateHashWithoutReplicasAndWorkersToDelete`), over the first
    `groups` worker groups (appending groups is an in-place change)."""
    spec = copy.deepcopy(config)
    workers = spec.get("workerGroupSpecs") or []
    spec["workerGroupSpecs"] = workers[:groups] if groups is not None else workers
    for group in [spec.get("headGroupSpec") or {}] + spec["workerGroupSpecs"]:
        for key in ("replicas", "minReplicas", "maxReplicas", "scaleStrategy"):
            group.pop(key, None)
        pod_spec = (group.get("template") or {}).get("spec") or {}
        pod_spec.pop("tolerations", None)
        pod_spec.pop("schedulingGates", None)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


class RayServiceController(Reconciler):
    name = COMPONENT
    watches = (RAYSERVICES, RAYCLUSTERS, PODS, DEPLOYMENTS, CRDS)

    def on_start(self) -> None:
        self.submitted: dict[str, str] = {}     # cluster uid -> serveConfigV2 last PUT (operator memory)
        self.dangling: dict[str, float] = {}    # cluster uid -> when it stopped being active/pending
        rayserve.serve_registry(self.ctx).add_listener(self.kick)

    def reconcile(self) -> None:
        if not operator_active(self.ctx)[0]:
            self.submitted.clear()   # a restarted operator has an empty cache and re-PUTs the config
            return
        for rs in self.ctx.store.list(RAYSERVICES)[0]:
            if rs["metadata"].get("deletionTimestamp"):
                self._finalize(rs)
            elif FINALIZER not in (rs["metadata"].get("finalizers") or []):
                self._mutate_meta(rs, lambda m: m.setdefault("finalizers", []).append(FINALIZER))
            else:
                self._reconcile_service(rs)
        hint = rayserve.serve_registry(self.ctx).next_change_in()
        if hint is not None:
            self.wake_in(hint)
        for timeout in (services.initializing_timeout_s(rs) for rs in self.ctx.store.list(RAYSERVICES)[0]):
            if timeout is not None:
                self.wake_in(min(timeout, 60.0))   # look again often enough to notice the deadline

    # -- one RayService ---------------------------------------------------------------------------
    def _reconcile_service(self, rs: dict[str, Any]) -> None:
        status = copy.deepcopy(rs.get("status") or {})
        if problem := _validate(rs):
            services.set_ready(self.ctx, status, rs, "False", "ValidationFailed", problem)
            if self._write(rs, status):
                record_event(self.ctx, rs, "Warning", "InvalidRayServiceMetadata", problem, component=COMPONENT)
            return
        if not status.get("conditions"):
            services.init_conditions(self.ctx, status, rs)
        if services.ready_reason(status) == "InitializingTimeout":
            return   # terminal: the RayService must be deleted and recreated (upstream)
        if services.initializing_timed_out(self.ctx, rs, status):
            self._give_up(rs, status)
            return
        if self._plan_clusters(rs, status):
            self._write(rs, status)
            return
        active = self._cluster(rs, status, "activeServiceStatus")
        pending = self._cluster(rs, status, "pendingServiceStatus")
        if pending is None and status.get("pendingServiceStatus", {}).get("rayClusterName"):
            pending = self._create_cluster(rs, status["pendingServiceStatus"]["rayClusterName"])
        for key, cluster in (("activeServiceStatus", active), ("pendingServiceStatus", pending)):
            if cluster is not None:
                self._observe_cluster(rs, status, key, cluster)
        if pending is not None and _all_running(status["pendingServiceStatus"]):
            services.ensure_services(self.ctx, rs, pending)
            status["activeServiceStatus"] = status["pendingServiceStatus"]
            status["pendingServiceStatus"] = {}
            active = pending
        elif active is not None and _all_running(status.get("activeServiceStatus") or {}):
            services.ensure_services(self.ctx, rs, active)
        status["numServeEndpoints"] = services.count_serve_endpoints(self.ctx, rs)
        services.set_conditions(self.ctx, status, rs)
        self._write(rs, status)
        self._delete_dangling(rs, status)

    def _plan_clusters(self, rs: dict[str, Any], status: dict[str, Any]) -> bool:
        """Choose pending/active cluster names for the spec; True when only names changed (write, requeue)."""
        active_name = (status.get("activeServiceStatus") or {}).get("rayClusterName", "")
        pending_name = (status.get("pendingServiceStatus") or {}).get("rayClusterName", "")
        config = rs["spec"].get("rayClusterConfig") or {}
        name = rs["metadata"]["name"]
        if not active_name and not pending_name:
            status["pendingServiceStatus"] = {"rayClusterName": f"{name}-{random_suffix()}"}
            status.setdefault("activeServiceStatus", {})
            return True
        if pending_name:
            pending = self.ctx.store.get(RAYCLUSTERS, rs["metadata"].get("namespace"), pending_name)
            if pending is not None and _hash_of(pending) != cluster_hash(config):
                # The cluster spec changed again while the pending cluster loads: replace it.
                status["pendingServiceStatus"] = {"rayClusterName": f"{name}-{random_suffix()}"}
                return True
            return False
        active = self.ctx.store.get(RAYCLUSTERS, rs["metadata"].get("namespace"), active_name)
        if active is None:
            return False
        groups = len(active["spec"].get("workerGroupSpecs") or [])
        if cluster_hash(config, groups) == _hash_of(active, groups_only=True):
            self._update_in_place(active, config)
            return False
        if ((rs["spec"].get("upgradeStrategy") or {}).get("type")) == "None":
            return False
        status["pendingServiceStatus"] = {"rayClusterName": f"{name}-{random_suffix()}"}
        return True

    def _update_in_place(self, cluster: dict[str, Any], config: dict[str, Any]) -> None:
        if cluster["spec"] == config:
            return

        def update(live: dict[str, Any]) -> None:
            live["spec"] = copy.deepcopy(config)
            live["metadata"].setdefault("annotations", {})[HASH_KEY] = cluster_hash(config)
            live["metadata"]["annotations"]["ray.io/num-worker-groups"] = str(len(config.get("workerGroupSpecs") or []))
        self.ctx.store.mutate(RAYCLUSTERS, cluster["metadata"].get("namespace"), cluster["metadata"]["name"], update)

    def _cluster(self, rs: dict[str, Any], status: dict[str, Any], key: str) -> dict[str, Any] | None:
        name = (status.get(key) or {}).get("rayClusterName")
        return self.ctx.store.get(RAYCLUSTERS, rs["metadata"].get("namespace"), name) if name else None

    def _create_cluster(self, rs: dict[str, Any], name: str) -> dict[str, Any] | None:
        config = copy.deepcopy(rs["spec"].get("rayClusterConfig") or {})
        body = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                "metadata": {"name": name, "namespace": rs["metadata"].get("namespace"),
                             "labels": {"ray.io/originated-from-cr-name": rs["metadata"]["name"],
                                        "ray.io/originated-from-crd": "RayService"},
                             "annotations": {HASH_KEY: cluster_hash(config), "ray.io/kuberay-version": KUBERAY_VERSION,
                                             "ray.io/num-worker-groups": str(len(config.get("workerGroupSpecs") or [])),
                                             "ray.io/enable-serve-service": "true"},
                             "ownerReferences": [owner_reference(rs)]},
                "spec": config}
        try:
            created = self.ctx.store.create(RAYCLUSTERS, body)
        except AlreadyExists:
            return self.ctx.store.get(RAYCLUSTERS, rs["metadata"].get("namespace"), name)
        record_event(self.ctx, rs, "Normal", "CreatedRayCluster",
                     f"Created RayCluster {rs['metadata'].get('namespace')}/{name}", component=COMPONENT)
        return created

    # -- Serve, through the head's dashboard ------------------------------------------------------
    def _observe_cluster(self, rs: dict[str, Any], status: dict[str, Any], key: str,
                         cluster: dict[str, Any]) -> None:
        namespace = cluster["metadata"].get("namespace")
        pods = [p for p in self.ctx.store.list(PODS, namespace, f"ray.io/cluster={cluster['metadata']['name']}")[0]
                if not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("phase") != "Failed"]
        cluster_state = cluster.get("status") or cluster_status(self.ctx, cluster, pods)
        entry = status.setdefault(key, {})
        entry["rayClusterName"] = cluster["metadata"]["name"]
        entry["rayClusterStatus"] = copy.deepcopy(cluster_state)
        head = next((p for p in pods if (p["metadata"].get("labels") or {}).get("ray.io/node-type") == "head"), None)
        head_ready = any(c.get("type") == "HeadPodReady" and c.get("status") == "True"
                         for c in cluster_state.get("conditions") or [])
        if head is None or not head_ready:
            return
        apps = self._serve_applications(rs, cluster, head)
        if apps is not None:
            entry["applicationStatuses"] = apps
        services.label_head_for_serve(self.ctx, head)

    def _serve_applications(self, rs: dict[str, Any], cluster: dict[str, Any],
                            head: dict[str, Any]) -> dict[str, Any] | None:
        namespace, head_name = head["metadata"].get("namespace"), head["metadata"]["name"]
        dashboard = self.ctx.pod_ports.handler(namespace, head_name, rayserve.DASHBOARD_PORT)
        if dashboard is None:
            return None   # dashboard unreachable: status not refreshed this pass (as upstream)
        current = _get_apps(dashboard)
        config = rs["spec"].get("serveConfigV2") or ""
        uid = cluster["metadata"]["uid"]
        if self.submitted.get(uid) != config or (current is not None and not current):
            self._put_config(rs, cluster, dashboard, config)
            current = _get_apps(dashboard)
        return None if current is None else _application_statuses(current)

    def _put_config(self, rs: dict[str, Any], cluster: dict[str, Any], dashboard: Any, config: str) -> None:
        target = f"{cluster['metadata'].get('namespace')}/{cluster['metadata']['name']}"
        try:
            body = json.dumps(yaml.safe_load(config) or {}).encode()
        except yaml.YAMLError as e:
            record_event(self.ctx, rs, "Warning", "FailedToUpdateServeApplications",
                         f"Failed to update serve applications to the RayCluster {target}: {e}", component=COMPONENT)
            return
        response = dashboard(HttpRequest("PUT", rayserve.SERVE_API, "", {"content-type": "application/json"}, body))
        if response.status != 200:
            record_event(self.ctx, rs, "Warning", "FailedToUpdateServeApplications",
                         f"Failed to update serve applications to the RayCluster {target}: "
                         f"{response.body.decode(errors='replace')}", component=COMPONENT)
            return
        self.submitted[cluster["metadata"]["uid"]] = config
        record_event(self.ctx, rs, "Normal", "UpdatedServeApplications",
                     f"Updated serve applications to the RayCluster {target}", component=COMPONENT)

    # -- writes, deletion -------------------------------------------------------------------------
    def _write(self, rs: dict[str, Any], status: dict[str, Any]) -> bool:
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        old = copy.deepcopy(rs.get("status") or {})
        old.pop("lastUpdateTime", None)
        new = {k: v for k, v in status.items() if k != "lastUpdateTime"}
        if old == new:
            return False
        status["lastUpdateTime"] = self.ctx.clock.rfc3339()
        return self.write_status(RAYSERVICES, rs, status)

    def _mutate_meta(self, rs: dict[str, Any], change: Any) -> None:
        try:
            self.ctx.store.mutate(RAYSERVICES, rs["metadata"].get("namespace"), rs["metadata"]["name"],
                                  lambda live: change(live["metadata"]))
        except NotFound:
            return

    def _give_up(self, rs: dict[str, Any], status: dict[str, Any]) -> None:
        """`ray.io/initializing-timeout` passed: delete the clusters and mark Ready False for good."""
        for cluster in self._owned_clusters(rs):
            self._delete_cluster(rs, cluster)
        timeout = services.initializing_timeout_s(rs)
        message = f"RayService did not become ready within the initializing timeout of {timeout:.0f}s"
        services.set_ready(self.ctx, status, rs, "False", "InitializingTimeout", message)
        status["activeServiceStatus"] = {}
        status["pendingServiceStatus"] = {}
        status["numServeEndpoints"] = 0
        if self._write(rs, status):
            record_event(self.ctx, rs, "Warning", "InitializingTimeout", message, component=COMPONENT)

    def _finalize(self, rs: dict[str, Any]) -> None:
        for cluster in self._owned_clusters(rs):
            self._delete_cluster(rs, cluster)
        self._mutate_meta(rs, lambda m: m.__setitem__(
            "finalizers", [f for f in m.get("finalizers") or [] if f != FINALIZER]))

    def _owned_clusters(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        items, _ = self.ctx.store.list(RAYCLUSTERS, rs["metadata"].get("namespace"),
                                       f"ray.io/originated-from-cr-name={rs['metadata']['name']}")
        uid = rs["metadata"]["uid"]
        return [c for c in items if any(r.get("uid") == uid for r in c["metadata"].get("ownerReferences") or [])]

    def _delete_cluster(self, rs: dict[str, Any], cluster: dict[str, Any]) -> None:
        try:
            self.ctx.store.delete(RAYCLUSTERS, cluster["metadata"].get("namespace"), cluster["metadata"]["name"])
        except NotFound:
            return
        self.submitted.pop(cluster["metadata"]["uid"], None)
        record_event(self.ctx, rs, "Normal", "DeletedRayCluster",
                     f"Deleted RayCluster {cluster['metadata'].get('namespace')}/{cluster['metadata']['name']}",
                     component=COMPONENT)

    def _delete_dangling(self, rs: dict[str, Any], status: dict[str, Any]) -> None:
        """Delete clusters neither active nor pending after `rayClusterDeletionDelaySeconds` (default 60)."""
        keep = {(status.get(k) or {}).get("rayClusterName") for k in ("activeServiceStatus", "pendingServiceStatus")}
        delay = float(rs["spec"].get("rayClusterDeletionDelaySeconds", 60))
        now = self.ctx.clock.elapsed_s()
        for cluster in self._owned_clusters(rs):
            uid = cluster["metadata"]["uid"]
            if cluster["metadata"]["name"] in keep:
                self.dangling.pop(uid, None)
                continue
            since = self.dangling.setdefault(uid, now)
            if now - since >= delay:
                self._delete_cluster(rs, cluster)
                self.dangling.pop(uid, None)
            else:
                self.wake_in(since + delay - now)


def _hash_of(cluster: dict[str, Any], *, groups_only: bool = False) -> str:
    """The hash the live cluster's spec gives (computed, so an edited cluster is seen as changed)."""
    return cluster_hash(cluster["spec"], len(cluster["spec"].get("workerGroupSpecs") or []) if groups_only else None)


def _validate(rs: dict[str, Any]) -> str:
    name = rs["metadata"]["name"]
    if len(name) > 47:
        return f"RayService name should be no more than 47 characters, got {name!r} ({len(name)})"
    if not _DNS1035.match(name):
        return f"RayService name should be a valid DNS-1035 label, got {name!r}"
    if not (rs.get("spec") or {}).get("rayClusterConfig", {}).get("headGroupSpec"):
        return "spec.rayClusterConfig.headGroupSpec is required"
    return ""


def _get_apps(dashboard: Any) -> dict[str, Any] | None:
    response = dashboard(HttpRequest("GET", rayserve.SERVE_API, "", {}, b""))
    if response.status != 200:
        return None
    return (json.loads(response.body or b"{}") or {}).get("applications") or {}


def _application_statuses(apps: dict[str, Any]) -> dict[str, Any]:
    """Serve's REST details -> KubeRay's `applicationStatuses` (empty messages omitted, as omitempty)."""
    result = {}
    for name, app in apps.items():
        entry: dict[str, Any] = {"status": app.get("status", "")}
        if app.get("message"):
            entry["message"] = app["message"]
        deployments = {}
        for dep_name, dep in (app.get("deployments") or {}).items():
            deployments[dep_name] = {"status": dep.get("status", "")}
            if dep.get("message"):
                deployments[dep_name]["message"] = dep["message"]
        if deployments:
            entry["serveDeploymentStatuses"] = deployments
        result[name or "default"] = entry
    return result


def _all_running(entry: dict[str, Any]) -> bool:
    apps = entry.get("applicationStatuses") or {}
    return bool(apps) and all(a.get("status") == "RUNNING" for a in apps.values())

"""The RayCluster controller of the simulated KubeRay operator (`raycluster_controller.go` @ v1.7.0).

Creates the head pod, the worker pods of each group and the headless `<cluster>-head-svc`; deletes
Failed pods so they are recreated (`shouldDeletePod`); reports `status` with `HeadPodReady` (reason
replaced by the head container's waiting reason, e.g. `ImagePullBackOff`, `CrashLoopBackOff`) and
`RayClusterProvisioned`, desired resources, worker counts, endpoints and the head's pod/service.
Acts only while the operator is up (`operator.operator_active`).
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kube.controllers import raypods
from sandbox.kube.controllers.base import (
    CRDS,
    DEPLOYMENTS,
    PODS,
    RAYCLUSTERS,
    SERVICES,
    Reconciler,
    condition,
    owned_by,
    set_condition,
)
from sandbox.kube.controllers.deployments import is_active, is_ready
from sandbox.kube.controllers.events import record_event
from sandbox.kube.controllers.operator import operator_active
from sandbox.kube.store import AlreadyExists, NotFound

COMPONENT = "raycluster-controller"


class RayClusterController(Reconciler):
    name = COMPONENT
    watches = (RAYCLUSTERS, PODS, DEPLOYMENTS, CRDS)

    def reconcile(self) -> None:
        if not operator_active(self.ctx)[0]:
            return
        pods, _ = self.ctx.store.list(PODS)
        for cluster in self.ctx.store.list(RAYCLUSTERS)[0]:
            if cluster["metadata"].get("deletionTimestamp"):
                continue
            mine = [p for p in pods if owned_by(p, cluster)]
            self._ensure_head_service(cluster)
            mine = self._delete_failed(cluster, mine)
            self._ensure_pods(cluster, mine)
            self._write_cluster_status(cluster)

    def _ensure_head_service(self, cluster: dict[str, Any]) -> None:
        svc = raypods.head_service(cluster)
        try:
            self.ctx.store.create(SERVICES, svc)
        except AlreadyExists:
            return
        record_event(self.ctx, cluster, "Normal", "CreatedService",
                     f"Created service {svc['metadata']['namespace']}/{svc['metadata']['name']}", component=COMPONENT)

    def _delete_failed(self, cluster: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded") \
                    and not pod["metadata"].get("deletionTimestamp"):
                try:
                    self.ctx.store.delete(PODS, pod["metadata"].get("namespace"), pod["metadata"]["name"])
                except NotFound:
                    continue
                record_event(self.ctx, cluster, "Normal", "DeletedPod",
                             f"Deleted Pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']}; "
                             f"Pod status: {pod['status'].get('phase')}", component=COMPONENT)
                continue
            kept.append(pod)
        return kept

    def _ensure_pods(self, cluster: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        active = [p for p in pods if is_active(p)]
        heads = [p for p in active if _labels(p).get("ray.io/node-type") == "head"]
        if not heads:
            self._create(cluster, raypods.head_pod(cluster), "CreatedHeadPod", "head")
        for group in cluster["spec"].get("workerGroupSpecs") or []:
            members = [p for p in active if _labels(p).get("ray.io/node-type") == "worker"
                       and _labels(p).get("ray.io/group") == group["groupName"]]
            want = raypods.desired_replicas(group)
            for _ in range(want - len(members)):
                self._create(cluster, raypods.worker_pod(cluster, group), "CreatedWorkerPod", "worker")
            for extra in members[want:]:
                try:
                    self.ctx.store.delete(PODS, extra["metadata"].get("namespace"), extra["metadata"]["name"])
                except NotFound:
                    continue
                record_event(self.ctx, cluster, "Normal", "DeletedWorkerPod",
                             f"Deleted worker Pod {extra['metadata'].get('namespace')}/{extra['metadata']['name']}",
                             component=COMPONENT)

    def _create(self, cluster: dict[str, Any], pod: dict[str, Any], reason: str, role: str) -> None:
        try:
            created = self.ctx.store.create(PODS, pod)
        except AlreadyExists:
            return
        record_event(self.ctx, cluster, "Normal", reason,
                     f"Created {role} Pod {created['metadata']['namespace']}/{created['metadata']['name']}",
                     component=COMPONENT)

    # -- status -----------------------------------------------------------------------------------
    def _write_cluster_status(self, cluster: dict[str, Any]) -> None:
        live = self.ctx.store.get(RAYCLUSTERS, cluster["metadata"].get("namespace"), cluster["metadata"]["name"])
        if live is None:
            return
        pods = [p for p in self.ctx.store.list(PODS, live["metadata"].get("namespace"),
                                               f"ray.io/cluster={live['metadata']['name']}")[0] if is_active(p)]
        status = cluster_status(self.ctx, live, pods)
        old = copy.deepcopy(live.get("status") or {})
        old.pop("lastUpdateTime", None)
        if old != status:
            status["lastUpdateTime"] = self.ctx.clock.rfc3339()
            self.write_status(RAYCLUSTERS, live, status)


def cluster_status(ctx: Any, cluster: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The RayCluster status for `pods` (without `lastUpdateTime`)."""
    previous = cluster.get("status") or {}
    now = ctx.clock.rfc3339()
    head = next((p for p in pods if _labels(p).get("ray.io/node-type") == "head"), None)
    workers = [p for p in pods if _labels(p).get("ray.io/node-type") == "worker"]
    groups = cluster["spec"].get("workerGroupSpecs") or []
    generation = cluster["metadata"].get("generation", 1)
    conditions = copy.deepcopy(previous.get("conditions") or [])
    head_ready, reason, message = _head_ready(head)
    set_condition(conditions, "HeadPodReady", "True" if head_ready else "False", now=now, reason=reason,
                  message=message, extra={"observedGeneration": generation})
    desired = sum(raypods.desired_replicas(g) for g in groups)
    all_ready = head_ready and len([w for w in workers if is_ready(w)]) >= desired
    provisioned = condition(previous, "RayClusterProvisioned")
    if all_ready or (provisioned and provisioned.get("status") == "True"):
        set_condition(conditions, "RayClusterProvisioned", "True", now=now, reason="AllPodRunningAndReadyFirstTime",
                      message="All Ray Pods are ready for the first time", extra={"observedGeneration": generation})
    else:
        set_condition(conditions, "RayClusterProvisioned", "False", now=now, reason="RayClusterPodsProvisioning",
                      message="RayCluster Pods are being provisioned for first time",
                      extra={"observedGeneration": generation})
    name = cluster["metadata"]["name"]
    status = {
        **raypods.desired_resources(cluster), "desiredWorkerReplicas": desired,
        "minWorkerReplicas": sum(int(g.get("minReplicas", 0) or 0) for g in groups),
        "maxWorkerReplicas": sum(int(g.get("maxReplicas", 0) or 0) for g in groups),
        "availableWorkerReplicas": len([w for w in workers if (w.get("status") or {}).get("phase") == "Running"]),
        "readyWorkerReplicas": len([w for w in workers if is_ready(w)]),
        "endpoints": {k: str(v) for k, v in raypods.head_ports(cluster).items()} | {"metrics": "8080"},
        "head": {"podName": head["metadata"]["name"] if head else "",
                 "podIP": (head.get("status") or {}).get("podIP", "") if head else "",
                 "serviceName": f"{name}-head-svc",
                 "serviceIP": (head.get("status") or {}).get("podIP", "") if head else ""},
        "conditions": conditions, "observedGeneration": generation,
    }
    if condition({"conditions": conditions}, "RayClusterProvisioned")["status"] == "True":
        status["state"] = "ready"
        status["stateTransitionTimes"] = previous.get("stateTransitionTimes") or {"ready": now}
    return status


def _head_ready(head: dict[str, Any] | None) -> tuple[bool, str, str]:
    if head is None:
        return False, "HeadPodNotFound", "Head Pod not found"
    if is_ready(head):
        return True, "HeadPodRunningAndReady", ""
    for status in (head.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        for key in ("waiting", "terminated"):
            if key in state and state[key].get("reason"):
                return False, state[key]["reason"], state[key].get("message", "")
    ready = condition(head.get("status") or {}, "Ready") or {}
    return False, ready.get("reason") or "HeadPodNotReady", ready.get("message", "")


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}

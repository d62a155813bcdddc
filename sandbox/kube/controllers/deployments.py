"""Deployments and ReplicaSets: a Deployment gets a ReplicaSet per pod template, which gets pods.

A template change creates a new ReplicaSet (`<name>-<pod-template-hash>`) and scales the old ones to
zero. The Deployment reports `replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`
and the `Available` / `Progressing` conditions with the real reasons and messages, so
`kubectl rollout status` and our waiters read it as they would read a real one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from typing import Any

from sandbox.kube.controllers.base import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    Reconciler,
    owned_by,
    owner_reference,
    set_condition,
)
from sandbox.kube.controllers.events import record_event
from sandbox.kube.store import AlreadyExists, NotFound

_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of k8s' SafeEncodeString


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SAFE) for _ in range(length))


def pod_from_template(template: dict[str, Any], *, name: str, namespace: str, owner: dict[str, Any],
                      extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod built from a pod template, with API defaults the real server would fill in."""
    meta = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**(meta.get("labels") or {}), **(extra_labels or {})},
                         "annotations": meta.get("annotations") or {},
                         "ownerReferences": [owner_reference(owner)]},
            "spec": spec, "status": {"phase": "Pending"}}


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def is_active(pod: dict[str, Any]) -> bool:
    return (not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"))


class DeploymentController(Reconciler):
    name = "deployment-controller"
    watches = (DEPLOYMENTS, REPLICASETS, PODS)

    def reconcile(self) -> None:
        replicasets, _ = self.ctx.store.list(REPLICASETS)
        pods, _ = self.ctx.store.list(PODS)
        for deployment in self.ctx.store.list(DEPLOYMENTS)[0]:
            if not deployment["metadata"].get("deletionTimestamp"):
                self._sync_deployment(deployment, [r for r in replicasets if owned_by(r, deployment)])
        for rs in self.ctx.store.list(REPLICASETS)[0]:
            self._sync_replicaset(rs, [p for p in pods if owned_by(p, rs)])

    def _sync_deployment(self, deployment: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        template = spec.get("template") or {}
        pod_hash = template_hash(template)
        rs_name = f"{meta['name']}-{pod_hash}"
        current = next((r for r in owned if r["metadata"]["name"] == rs_name), None)
        replicas = int(spec.get("replicas", 1))
        if current is None:
            current = self._create_replicaset(deployment, rs_name, pod_hash, replicas)
        elif int(current["spec"].get("replicas", 0)) != replicas:
            self._scale(current, replicas, deployment)
        for old in owned:
            if old["metadata"]["name"] != rs_name and int(old["spec"].get("replicas", 0)) != 0:
                self._scale(old, 0, deployment)
        self._deployment_status(deployment, current, owned, replicas)

    def _create_replicaset(self, deployment: dict[str, Any], name: str, pod_hash: str,
                           replicas: int) -> dict[str, Any]:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": name, "namespace": meta.get("namespace"),
                           "labels": dict(template["metadata"]["labels"]),
                           "ownerReferences": [owner_reference(deployment)]},
              "spec": {"replicas": replicas, "selector": selector, "template": template}}
        try:
            created = self.ctx.store.create(REPLICASETS, rs)
        except AlreadyExists:
            return self.ctx.store.get(REPLICASETS, meta.get("namespace"), name)
        record_event(self.ctx, deployment, "Normal", "ScalingReplicaSet",
                     f"Scaled up replica set {name} from 0 to {replicas}", component="deployment-controller")
        return created

    def _scale(self, rs: dict[str, Any], replicas: int, deployment: dict[str, Any]) -> None:
        before = int(rs["spec"].get("replicas", 0))
        try:
            self.ctx.store.mutate(REPLICASETS, rs["metadata"].get("namespace"), rs["metadata"]["name"],
                                  lambda live: live["spec"].__setitem__("replicas", replicas))
        except NotFound:
            return
        word = "up" if replicas > before else "down"
        record_event(self.ctx, deployment, "Normal", "ScalingReplicaSet",
                     f"Scaled {word} replica set {rs['metadata']['name']} from {before} to {replicas}",
                     component="deployment-controller")

    def _deployment_status(self, deployment: dict[str, Any], current: dict[str, Any],
                           owned: list[dict[str, Any]], replicas: int) -> None:
        rs_stats = [r.get("status") or {} for r in owned] or [{}]
        new_stats = (self.ctx.store.get(REPLICASETS, current["metadata"].get("namespace"),
                                        current["metadata"]["name"]) or current).get("status") or {}
        total = sum(int(s.get("replicas", 0)) for s in rs_stats)
        available = sum(int(s.get("availableReplicas", 0)) for s in rs_stats)
        ready = sum(int(s.get("readyReplicas", 0)) for s in rs_stats)
        updated = int(new_stats.get("replicas", 0))
        status = copy.deepcopy(deployment.get("status") or {})
        now = self.ctx.clock.rfc3339()
        conditions = status.setdefault("conditions", [])
        ok = available >= replicas - _max_unavailable(deployment, replicas)
        set_condition(conditions, "Available", "True" if ok else "False", now=now,
                      reason="MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
                      message="Deployment has minimum availability." if ok
                      else "Deployment does not have minimum availability.",
                      extra={"lastUpdateTime": now})
        done = updated == replicas and int(new_stats.get("availableReplicas", 0)) >= replicas
        name = current["metadata"]["name"]
        set_condition(conditions, "Progressing", "True", now=now,
                      reason="NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                      message=f'ReplicaSet "{name}" has successfully progressed.' if done
                      else f'ReplicaSet "{name}" is progressing.', extra={"lastUpdateTime": now})
        _keep_update_times(deployment.get("status") or {}, conditions)
        status.update(observedGeneration=deployment["metadata"].get("generation", 1), replicas=total,
                      updatedReplicas=updated, readyReplicas=ready, availableReplicas=available)
        if total - available > 0:
            status["unavailableReplicas"] = total - available
        else:
            status.pop("unavailableReplicas", None)
        self.write_status(DEPLOYMENTS, deployment, status)

    def _sync_replicaset(self, rs: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        active = [p for p in pods if is_active(p)]
        want = int(rs["spec"].get("replicas", 0))
        meta = rs["metadata"]
        for _ in range(want - len(active)):
            pod = pod_from_template(rs["spec"].get("template") or {}, name=f"{meta['name']}-{random_suffix()}",
                                    namespace=meta.get("namespace"), owner=rs)
            created = self.ctx.store.create(PODS, pod)
            record_event(self.ctx, rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                         component="replicaset-controller")
        for pod in active[want:] if len(active) > want else []:
            try:
                self.ctx.store.delete(PODS, meta.get("namespace"), pod["metadata"]["name"])
            except NotFound:
                continue
            record_event(self.ctx, rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                         component="replicaset-controller")
        ready = sum(1 for p in active if is_ready(p))
        status = {"replicas": min(len(active), max(want, len(active))), "fullyLabeledReplicas": len(active),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": meta.get("generation", 1)}
        self.write_status(REPLICASETS, rs, status)


def _max_unavailable(deployment: dict[str, Any], replicas: int) -> int:
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = str((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"))
    return replicas * int(value[:-1]) // 100 if value.endswith("%") else int(value)


def _keep_update_times(old_status: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
    """`lastUpdateTime` moves only when reason or message changes (so idle passes write nothing)."""
    old = {c.get("type"): c for c in old_status.get("conditions") or []}
    for cond in conditions:
        prev = old.get(cond["type"])
        if prev and (prev.get("reason"), prev.get("message")) == (cond.get("reason"), cond.get("message")):
            cond["lastUpdateTime"] = prev.get("lastUpdateTime", cond.get("lastUpdateTime"))

"""The default scheduler: binds Pending pods to nodes, or says why not the way kube-scheduler does.

Filters run per node in kube-scheduler's order (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit); the first failing filter gives that node's reasons. Among the nodes that fit, the
one with the most CPU and memory left wins (the default LeastAllocated score). An unschedulable pod gets
`PodScheduled=False reason=Unschedulable` and a `FailedScheduling` Warning with the real message:
`0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint
{nvidia.com/gpu: present}. preemption: 0/3 nodes are available: 1 No preemption victims found for
incoming pod, 2 Preemption is not helpful for scheduling.` Pods are retried whenever nodes or pods
change. GKE's ExtendedResourceToleration admission is honoured: a pod requesting `nvidia.com/gpu`
tolerates the `nvidia.com/gpu` taint.

Fault `unschedulable` / `no_gpu_capacity`: another team's job takes every GPU of each GPU node as soon
as the node offers them (a pod `gpu-job-<node>` in namespace `other-team`, bound to it), so pods that
request GPUs stay Pending with `Insufficient nvidia.com/gpu`, and a client that adds up the GPUs the
nodes' pods request sees why, as on a real cluster.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandbox.kube.controllers.base import NODES, PODS, Reconciler, set_condition
from sandbox.kube.controllers.events import record_event
from sandbox.kube.controllers.resources import GPU, parse_quantity, pod_requests
from sandbox.kube.store import AlreadyExists, NotFound

NO_PREEMPTION_VICTIMS = "No preemption victims found for incoming pod"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
GPU_TAKING_FAULTS = ("no_gpu_capacity", "unschedulable")
OTHER_TEAM = "other-team"


def _gpu_job(node: str, gpus: str) -> dict[str, Any]:
    """Another team's training pod holding all `gpus` of `node` (fault no_gpu_capacity)."""
    limits = {GPU: gpus}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"gpu-job-{node}", "namespace": OTHER_TEAM, "labels": {"team": OTHER_TEAM}},
            "spec": {"nodeName": node, "restartPolicy": "Never",
                     "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                                     "resources": {"requests": limits, "limits": limits}}]},
            "status": {"phase": "Pending"}}


def tolerates(pod: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Whether `pod` tolerates `taint` (with GKE's ExtendedResourceToleration for GPU requests)."""
    if taint.get("effect") == "PreferNoSchedule":
        return True
    if taint.get("key") == GPU and pod_requests(pod).get(GPU, Decimal(0)) > 0:
        return True
    for tol in (pod.get("spec") or {}).get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def matches_node_affinity(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """nodeSelector and required node affinity (terms ORed; a term's matchExpressions on labels and
    matchFields on `metadata.name`, the only field the API accepts there, ANDed)."""
    labels = node["metadata"].get("labels") or {}
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    fields = {"metadata.name": node["metadata"].get("name", "")}
    return not terms or any(all(_expression_holds(e, labels) for e in t.get("matchExpressions") or [])
                            and all(_expression_holds(f, fields) for f in t.get("matchFields") or [])
                            for t in terms)


def _expression_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        diff = int(labels[key]) - int(values[0])
        return diff > 0 if op == "Gt" else diff < 0
    return False


def unschedulable_message(reasons: dict[str, int], resource_only: int, total: int) -> str:
    """The scheduler's FitError text for `total` nodes (reason -> node count)."""
    if total == 0:
        return "no nodes available to schedule pods"
    body = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    preemption = {NO_PREEMPTION_VICTIMS: resource_only, PREEMPTION_NOT_HELPFUL: total - resource_only}
    pre = ", ".join(sorted(f"{count} {reason}" for reason, count in preemption.items() if count))
    return f"0/{total} nodes are available: {body}. preemption: 0/{total} nodes are available: {pre}."


class Scheduler(Reconciler):
    name = "default-scheduler"
    watches = (NODES, PODS)

    def reconcile(self) -> None:
        pods, _ = self.ctx.store.list(PODS)
        nodes = [n for n in self.ctx.store.list(NODES)[0]]
        if any(f["kind"] in GPU_TAKING_FAULTS for f in self.ctx.faults.list()):
            pods += self._take_the_gpus(nodes, pods)
        else:
            pods = self._end_other_jobs(pods)
        used = _used_by_node(pods)
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName")
                   and not p["metadata"].get("deletionTimestamp")
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"
                   and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"]
        for pod in pending:
            self._schedule_one(pod, nodes, used)

    def _schedule_one(self, pod: dict[str, Any], nodes: list[dict[str, Any]],
                      used: dict[str, dict[str, Decimal]]) -> None:
        requests = pod_requests(pod)
        reasons: dict[str, int] = {}
        resource_only = 0
        feasible = []
        for node in nodes:
            failed, only_resources = _filter(pod, node, requests, used.get(node["metadata"]["name"], {}))
            if not failed:
                feasible.append(node)
                continue
            resource_only += only_resources
            for reason in failed:
                reasons[reason] = reasons.get(reason, 0) + 1
        if not feasible:
            self._mark_unschedulable(pod, unschedulable_message(reasons, resource_only, len(nodes)))
            return
        # NodeResourcesFit's default LeastAllocated scoring: the node with the most room left wins.
        node = max(feasible, key=lambda n: _free_share(n, used.get(n["metadata"]["name"], {}), requests))
        self._bind(pod, node)
        bucket = used.setdefault(node["metadata"]["name"], {})
        for name, amount in requests.items():
            bucket[name] = bucket.get(name, Decimal(0)) + amount
        bucket["pods"] = bucket.get("pods", Decimal(0)) + 1

    def _take_the_gpus(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bind another team's job to every GPU node that offers GPUs and has none yet; return the new pods."""
        taken = {(p.get("spec") or {}).get("nodeName") for p in pods
                 if p["metadata"].get("namespace") == OTHER_TEAM}
        created = []
        for node in nodes:
            gpus = ((node.get("status") or {}).get("allocatable") or {}).get(GPU, "0")
            if node["metadata"]["name"] in taken or parse_quantity(gpus) <= 0:
                continue
            try:
                created.append(self.ctx.store.create(PODS, _gpu_job(node["metadata"]["name"], gpus)))
            except AlreadyExists:
                continue
        return created

    def _end_other_jobs(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The fault was cleared: the other team's jobs end and give their GPUs back."""
        for pod in pods:
            if pod["metadata"].get("namespace") == OTHER_TEAM:
                try:
                    self.ctx.store.delete(PODS, OTHER_TEAM, pod["metadata"]["name"])
                except NotFound:
                    pass
        return [p for p in pods if p["metadata"].get("namespace") != OTHER_TEAM]

    def _bind(self, pod: dict[str, Any], node: dict[str, Any]) -> None:
        meta, node_name = pod["metadata"], node["metadata"]["name"]
        now = self.ctx.clock.rfc3339()

        def bind(live: dict[str, Any]) -> None:
            live.setdefault("spec", {})["nodeName"] = node_name
            status = live.setdefault("status", {"phase": "Pending"})
            status.setdefault("phase", "Pending")
            set_condition(status.setdefault("conditions", []), "PodScheduled", "True", now=now)
        try:
            self.ctx.store.mutate(PODS, meta.get("namespace"), meta["name"], bind)
        except NotFound:
            return
        record_event(self.ctx, pod, "Normal", "Scheduled",
                     f"Successfully assigned {meta.get('namespace')}/{meta['name']} to {node_name}",
                     component="default-scheduler")

    def _mark_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        status = dict(pod.get("status") or {})
        status.setdefault("phase", "Pending")
        status["conditions"] = [dict(c) for c in status.get("conditions") or []]
        set_condition(status["conditions"], "PodScheduled", "False", now=self.ctx.clock.rfc3339(),
                      reason="Unschedulable", message=message)
        if self.write_status(PODS, pod, status):
            record_event(self.ctx, pod, "Warning", "FailedScheduling", message, component="default-scheduler")


def _used_by_node(pods: list[dict[str, Any]]) -> dict[str, dict[str, Decimal]]:
    used: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        bucket = used.setdefault(node, {})
        for name, amount in pod_requests(pod).items():
            bucket[name] = bucket.get(name, Decimal(0)) + amount
        bucket["pods"] = bucket.get("pods", Decimal(0)) + 1
    return used


def _free_share(node: dict[str, Any], used: dict[str, Decimal], requests: dict[str, Decimal]) -> Decimal:
    """Mean share of CPU and memory left on `node` after placing `requests` (LeastAllocated)."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    shares = []
    for name in ("cpu", "memory"):
        have = parse_quantity(allocatable.get(name, "0"))
        left = have - used.get(name, Decimal(0)) - requests.get(name, Decimal(0))
        shares.append(left / have if have > 0 else Decimal(0))
    return sum(shares) / len(shares)


def _filter(pod: dict[str, Any], node: dict[str, Any], requests: dict[str, Decimal],
            used: dict[str, Decimal]) -> tuple[list[str], bool]:
    """(reasons this node cannot take the pod, whether they are all about resources)."""
    if (node.get("spec") or {}).get("unschedulable"):
        return ["node(s) were unschedulable"], False
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"], False
    if not matches_node_affinity(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"], False
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    reasons = []
    if used.get("pods", Decimal(0)) + 1 > parse_quantity(allocatable.get("pods", "110")):
        reasons.append("Too many pods")
    for name, amount in sorted(requests.items()):
        if amount <= 0:
            continue
        have = parse_quantity(allocatable.get(name, "0"))
        if used.get(name, Decimal(0)) + amount > have:
            reasons.append(f"Insufficient {name}")
    return reasons, True

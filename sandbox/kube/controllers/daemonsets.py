"""DaemonSets: one pod per eligible node, replaced when the template changes, as kube-controller-manager does.

A node is eligible when the pod the template describes (plus the tolerations the controller adds)
tolerates its NoSchedule/NoExecute taints and matches its nodeSelector and required node affinity.
Each pod is named `<ds>-<5 chars>`, carries the template's labels plus `controller-revision-hash` and
`pod-template-generation`, is owned by the DaemonSet (controller, blockOwnerDeletion) and is pinned to
its node by required node affinity `matchFields metadata.name In [<node>]` (the DaemonSet controller's
way since 1.12; the default scheduler binds it). A template change (a new `generation`) replaces the
outdated pods within `rollingUpdate.maxUnavailable` (default 1; `100%` deletes them all at once); a
node whose pod is still terminating gets its new pod once the old one is gone. Failed pods are deleted
and recreated. Deleting the DaemonSet deletes its pods through the garbage collector
(`deletion.Deleter`, ownerReferences); pods of a vanished node go with PodGC (`nodes.remove_node`).

Status as the real controller counts it: `desiredNumberScheduled`, `currentNumberScheduled`,
`numberReady`, `numberMisscheduled` always; `numberAvailable`, `numberUnavailable`,
`updatedNumberScheduled`, `observedGeneration` omitted when zero (`omitempty` in the Go type).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from sandbox.kube.controllers.base import NODES, PODS, Reconciler, owned_by
from sandbox.kube.controllers.deployments import is_ready, pod_from_template, random_suffix, template_hash
from sandbox.kube.controllers.events import record_event
from sandbox.kube.controllers.scheduler import matches_node_affinity, tolerates
from sandbox.kube.store import NotFound

DAEMONSETS = ("apps", "daemonsets")
COMPONENT = "daemonset-controller"
NODE_NAME_FIELD = "metadata.name"
# AddOrUpdateDaemonPodTolerations (pkg/controller/daemon/util): what every daemon pod tolerates.
DAEMON_TOLERATIONS = (
    [{"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": "NoExecute"}
     for key in ("not-ready", "unreachable")]
    + [{"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": "NoSchedule"}
       for key in ("disk-pressure", "memory-pressure", "pid-pressure", "unschedulable")])


def daemon_tolerations(tolerations: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """`tolerations` plus the daemon pod tolerations it lacks (same key and effect counts as present)."""
    result = [dict(t) for t in tolerations or []]
    for extra in DAEMON_TOLERATIONS:
        if not any(t.get("key") == extra["key"] and t.get("effect") == extra["effect"] for t in result):
            result.append(dict(extra))
    return result


def pinned_affinity(affinity: dict[str, Any] | None, node_name: str) -> dict[str, Any]:
    """`affinity` with every required term's matchFields replaced by `metadata.name In [node_name]`
    (ReplaceDaemonSetPodNodeNameNodeAffinity); no required terms -> one term with only that field."""
    result = copy.deepcopy(affinity or {})
    required = result.setdefault("nodeAffinity", {}).setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    field = [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node_name]}]
    terms = required.get("nodeSelectorTerms") or []
    required["nodeSelectorTerms"] = [{**t, "matchFields": field} for t in terms] or [{"matchFields": field}]
    return result


def target_node(pod: dict[str, Any]) -> str | None:
    """The node a daemon pod is for: `spec.nodeName`, else its `metadata.name` affinity (GetTargetNodeName)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == NODE_NAME_FIELD and field.get("operator") == "In" and len(field.get("values") or []) == 1:
                return field["values"][0]
    return None


def should_run(ds: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether the DaemonSet wants a pod on `node`: taints tolerated, selector and affinity matched."""
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    spec["tolerations"] = daemon_tolerations(spec.get("tolerations"))
    pod = {"metadata": {}, "spec": spec}
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return False
    return matches_node_affinity(pod, node)


def max_unavailable(ds: dict[str, Any], desired: int) -> int:
    """rollingUpdate.maxUnavailable as a pod count (percent of desired, rounded up; default 1)."""
    rolling = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    value = str(rolling.get("maxUnavailable", 1))
    if value.endswith("%"):
        return math.ceil(desired * float(value[:-1]) / 100)
    return int(value)


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


class DaemonSetController(Reconciler):
    name = COMPONENT
    watches = (DAEMONSETS, NODES, PODS)

    def reconcile(self) -> None:
        daemonsets = [d for d in self.ctx.store.list(DAEMONSETS)[0] if not d["metadata"].get("deletionTimestamp")]
        if not daemonsets:
            return   # a terminating one's pods are the garbage collector's; none: spare the timer thread
        nodes, _ = self.ctx.store.list(NODES)
        pods, _ = self.ctx.store.list(PODS)
        for ds in daemonsets:
            owned = [p for p in pods if owned_by(p, ds)
                     and not (_terminal(p) and p["metadata"].get("deletionTimestamp"))]
            self._sync(ds, nodes, owned)

    def _sync(self, ds: dict[str, Any], nodes: list[dict[str, Any]], owned: list[dict[str, Any]]) -> None:
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in sorted(owned, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            by_node.setdefault(target_node(pod) or "", []).append(pod)
        wanted = {n["metadata"]["name"] for n in nodes if should_run(ds, n)}
        current_hash = template_hash((ds.get("spec") or {}).get("template") or {})
        for node_name, node_pods in by_node.items():
            if node_name not in wanted:
                for pod in node_pods:
                    self._delete(ds, pod)            # misscheduled (or its node is gone: PodGC's job)
        for node_name in sorted(wanted):
            self._manage_node(ds, node_name, by_node.get(node_name, []))
        self._roll(ds, wanted, by_node, current_hash)
        self._write_status(ds, wanted, by_node, current_hash)

    def _manage_node(self, ds: dict[str, Any], node_name: str, node_pods: list[dict[str, Any]]) -> None:
        """Create the node's pod when it has none; delete failed and surplus ones (the oldest stays)."""
        if not node_pods:
            self._create(ds, node_name)
            return
        running = [p for p in node_pods if not p["metadata"].get("deletionTimestamp")]
        for pod in running:
            if (pod.get("status") or {}).get("phase") == "Failed":
                self._delete(ds, pod)
        healthy = [p for p in running if (p.get("status") or {}).get("phase") != "Failed"]
        for pod in healthy[1:]:
            self._delete(ds, pod)

    def _roll(self, ds: dict[str, Any], wanted: set[str], by_node: dict[str, list[dict[str, Any]]],
              current_hash: str) -> None:
        """RollingUpdate: delete outdated pods, unavailable ones first, within maxUnavailable."""
        strategy = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy != "RollingUpdate":
            return   # OnDelete: new pods only where someone deleted the old ones
        live = {n: [p for p in by_node.get(n, []) if not p["metadata"].get("deletionTimestamp")] for n in wanted}
        unavailable = sum(1 for n in wanted if not any(is_ready(p) for p in live[n]))
        budget = max_unavailable(ds, len(wanted)) - unavailable
        outdated = [p for n in sorted(wanted) for p in live[n] if _hash_of(p) != current_hash]
        for pod in sorted(outdated, key=is_ready):
            if is_ready(pod):
                if budget <= 0:
                    break
                budget -= 1
            self._delete(ds, pod)

    def _create(self, ds: dict[str, Any], node_name: str) -> None:
        meta, spec = ds["metadata"], ds.get("spec") or {}
        template = spec.get("template") or {}
        labels = {"controller-revision-hash": template_hash(template),
                  "pod-template-generation": str(meta.get("generation", 1))}
        pod = pod_from_template(template, name=f"{meta['name']}-{random_suffix()}", namespace=meta.get("namespace"),
                                owner=ds, extra_labels=labels)
        pod["spec"]["affinity"] = pinned_affinity(pod["spec"].get("affinity"), node_name)
        pod["spec"]["tolerations"] = daemon_tolerations(pod["spec"].get("tolerations"))
        created = self.ctx.store.create(PODS, pod)
        record_event(self.ctx, ds, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                     component=COMPONENT)

    def _delete(self, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        """Delete `pod` as a client's DELETE would: a running pod terminates for its grace period."""
        meta = pod["metadata"]
        namespace, name, uid = meta.get("namespace"), meta["name"], meta.get("uid")
        grace = int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        try:
            if (pod.get("spec") or {}).get("nodeName") and not _terminal(pod) and grace > 0:
                if meta.get("deletionTimestamp"):
                    return
                self.ctx.store.mark_deleting(PODS, namespace, name, grace)
                self.ctx.clock.call_later(grace, lambda: self._finish(namespace, name, uid))
            else:
                self.ctx.store.delete(PODS, namespace, name)
        except NotFound:
            return
        record_event(self.ctx, ds, "Normal", "SuccessfulDelete", f"Deleted pod: {name}", component=COMPONENT)

    def _finish(self, namespace: str | None, name: str, uid: str | None) -> None:
        live = self.ctx.store.get(PODS, namespace, name)
        if live is not None and live["metadata"].get("uid") == uid:
            try:
                self.ctx.store.delete(PODS, namespace, name)
            except NotFound:
                pass

    def _write_status(self, ds: dict[str, Any], wanted: set[str], by_node: dict[str, list[dict[str, Any]]],
                      current_hash: str) -> None:
        current = ready = available = updated = 0
        for node_name in wanted:
            node_pods = by_node.get(node_name, [])
            if not node_pods:
                continue
            current += 1
            pod = node_pods[0]
            ready += is_ready(pod)
            available += is_ready(pod)           # minReadySeconds 0: available as soon as Ready
            updated += _hash_of(pod) == current_hash
        misscheduled = sum(1 for n, p in by_node.items() if p and n not in wanted)
        status = {"currentNumberScheduled": current, "desiredNumberScheduled": len(wanted),
                  "numberMisscheduled": misscheduled, "numberReady": ready}
        optional = {"numberAvailable": available, "numberUnavailable": len(wanted) - available,
                    "updatedNumberScheduled": updated,
                    "observedGeneration": int(ds["metadata"].get("generation", 1))}
        status.update({k: v for k, v in optional.items() if v})
        self.write_status(DAEMONSETS, ds, status)


def _hash_of(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get("controller-revision-hash", "")

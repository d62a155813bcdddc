"""Node-pressure eviction of pods whose writes fill the node's disk (the kubelet's eviction manager).

Fault `disk_full {pod_prefix?, node_type?}` (default: Ray workers): the model download fills the
node's boot disk; `node_disk_free_gb / weight_download_mb_per_s` after the container starts, the
kubelet evicts the pod: phase `Failed`, `reason: Evicted`, the kubelet's ephemeral-storage message in
`status.message`, a `DisruptionTarget` condition and a Warning `Evicted` event. KubeRay deletes the
Failed pod and creates a new one, so the download silently restarts (reference/kuberay.md, "Disk full
during download").
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.controllers.base import PODS, set_condition, take_fault
from sandbox.kube.controllers.events import record_event
from sandbox.kube.store import NotFound


def eviction_delay_s(ctx: ClusterContext, pod: dict[str, Any], node_type: str) -> float | None:
    """Seconds after start at which this run of `pod` is evicted for disk pressure, if it is."""
    fault = take_fault(ctx.faults, "disk_full", key="pod_prefix", value=pod["metadata"]["name"],
                       applies=lambda f: node_type == "worker", node_type=node_type)
    if fault is None:
        return None
    kube = ctx.profile.get("kube", {})
    return float(kube.get("node_disk_free_gb", 85)) * 1000 / float(kube.get("weight_download_mb_per_s", 700))


def evict(ctx: ClusterContext, pod: dict[str, Any], *, node: str) -> None:
    """Mark `pod` evicted for ephemeral-storage pressure and record the kubelet's event."""
    container = ((pod.get("spec") or {}).get("containers") or [{"name": "main"}])[0]["name"]
    free_gb = float(ctx.profile.get("kube", {}).get("node_disk_free_gb", 85))
    message = (f"The node was low on resource: ephemeral-storage. Threshold quantity: 10120387530, available: "
               f"9764Ki. Container {container} was using {int(free_gb * 1e6)}Ki, request is 0, has larger "
               "consumption of ephemeral-storage. ")
    now = ctx.clock.rfc3339()

    def mark(live: dict[str, Any]) -> None:
        status = live.setdefault("status", {})
        status.update(phase="Failed", reason="Evicted", message=message)
        for cs in status.get("containerStatuses") or []:
            cs.update(ready=False, started=False, state={"terminated": {
                "exitCode": 137, "reason": "ContainerStatusUnknown", "startedAt": now, "finishedAt": now,
                "message": "The container could not be located when the pod was terminated"}})
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "DisruptionTarget", "True", now=now, reason="TerminationByKubelet",
                      message=message)
        for ctype in ("Ready", "ContainersReady"):
            set_condition(conditions, ctype, "False", now=now, reason="PodFailed")
    try:
        ctx.store.mutate(PODS, pod["metadata"].get("namespace"), pod["metadata"]["name"], mark)
    except NotFound:
        return
    record_event(ctx, pod, "Warning", "Evicted", message, component="kubelet", host=node)
    record_event(ctx, pod, "Normal", "Killing", f"Stopping container {container}", component="kubelet", host=node)

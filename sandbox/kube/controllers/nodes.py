"""Nodes of GKE node pools: registration with GKE's labels and taints, the GPU driver, and node loss.

`add_node_pool_nodes` is called when a node pool becomes RUNNING: each VM registers as a Ready Node
with the labels GKE puts on it, `nvidia.com/gpu=present:NoSchedule` on GPU nodes, and capacity from
the machine shape. `nvidia.com/gpu` appears in capacity/allocatable only `gpu_driver_install_s` later,
when GKE's driver installer and device plugin have run (and never when the pool disabled driver
installation). `remove_node_pool_nodes` deletes the Nodes; their pods fail as PodGC does it.

Fault `node_lost {node_prefix?}` (NodeController): the first Ready node matching the prefix (default:
any GPU node) disappears, as when its VM dies; its pods fail and their controllers replace them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.controllers.base import NODES, PODS, Reconciler, set_condition
from sandbox.kube.controllers.events import record_event
from sandbox.kube.controllers.resources import (
    GPU,
    format_cpu,
    format_memory,
    gke_allocatable_cpu,
    gke_allocatable_memory,
    machine_shape,
)
from sandbox.kube.store import NotFound

POOL_LABEL = "cloud.google.com/gke-nodepool"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
DRIVER_LABEL = "cloud.google.com/gke-gpu-driver-version"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}
KUBELET_VERSION = "v1.33.5-gke.1080000"


def add_node_pool_nodes(ctx: ClusterContext, node_pool: dict[str, Any], node_names: list[str]) -> None:
    """Register `node_names` as Ready Nodes of `node_pool`; GPUs become allocatable after the driver."""
    config = node_pool.get("config") or {}
    cpus, gib, shape_gpus, shape_accel = machine_shape(config.get("machineType", "e2-medium"))
    accelerators = config.get("accelerators") or []
    gpus = sum(int(a.get("acceleratorCount", 0)) for a in accelerators) or shape_gpus
    accel = (accelerators[0].get("acceleratorType") if accelerators else None) or shape_accel
    driver = _driver_version(accelerators[0] if accelerators else {}) if gpus else None
    zones = node_pool.get("locations") or [ctx.cluster.location]
    existing = {n["metadata"]["name"] for n in ctx.store.list(NODES)[0]}
    for index, name in enumerate(node_names):
        if name in existing:
            continue
        node = _node_object(ctx, node_pool, name, zone=zones[index % len(zones)], cpus=cpus, gib=gib,
                            accel=accel if gpus else None, driver=driver, index=len(existing) + index)
        ctx.store.create(NODES, node)
        record_event(ctx, ctx.store.get(NODES, None, name), "Normal", "RegisteredNode",
                     f"Node {name} event: Registered Node {name} in Controller", component="node-controller")
        if gpus and driver:
            delay = float(ctx.profile.get("kube", {}).get("gpu_driver_install_s", 300))
            ctx.clock.call_later(delay, lambda n=name, g=gpus: _gpu_ready(ctx, n, g))


def remove_node_pool_nodes(ctx: ClusterContext, pool_name: str) -> None:
    """Delete the Nodes of pool `pool_name`; pods bound to them fail (then PodGC deletes them)."""
    nodes, _ = ctx.store.list(NODES, label_selector=f"{POOL_LABEL}={pool_name}")
    for node in nodes:
        remove_node(ctx, node["metadata"]["name"], reason="NodePoolDeleted")


def remove_node(ctx: ClusterContext, name: str, *, reason: str) -> None:
    """Delete Node `name` and fail its pods as the pod garbage collector does."""
    try:
        node = ctx.store.delete(NODES, None, name)
    except NotFound:
        return
    record_event(ctx, node, "Normal", "RemovingNode", f"Node {name} event: Removing Node {name} from Controller",
                 component="node-controller")
    for pod in ctx.store.list(PODS)[0]:
        if (pod.get("spec") or {}).get("nodeName") == name:
            fail_orphaned_pod(ctx, pod)


def fail_orphaned_pod(ctx: ClusterContext, pod: dict[str, Any]) -> None:
    """Mark a pod of a vanished node Failed (DisruptionTarget), then delete it after PodGC's quarantine."""
    meta = pod["metadata"]
    now = ctx.clock.rfc3339()

    def fail(live: dict[str, Any]) -> None:
        status = live.setdefault("status", {})
        if status.get("phase") not in ("Succeeded", "Failed"):
            status["phase"] = "Failed"
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "DisruptionTarget", "True", now=now, reason="DeletionByPodGC",
                      message="PodGC: node no longer exists")
        set_condition(conditions, "Ready", "False", now=now, reason="PodFailed")
    try:
        ctx.store.mutate(PODS, meta.get("namespace"), meta["name"], fail)
    except NotFound:
        return
    quarantine = float(ctx.profile.get("kube", {}).get("pod_gc_quarantine_s", 40))

    def delete() -> None:
        live = ctx.store.get(PODS, meta.get("namespace"), meta["name"])
        if live is not None and live["metadata"].get("uid") == meta.get("uid"):
            try:
                ctx.store.delete(PODS, meta.get("namespace"), meta["name"])
            except NotFound:
                pass
    ctx.clock.call_later(quarantine, delete)


def _driver_version(accelerator: dict[str, Any]) -> str | None:
    """The gke-gpu-driver-version label; None when the pool disabled GKE's driver installation."""
    wanted = ((accelerator.get("gpuDriverInstallationConfig") or {}).get("gpuDriverVersion") or "DEFAULT")
    if wanted in ("INSTALLATION_DISABLED", "GPU_DRIVER_VERSION_UNSPECIFIED"):
        # Unspecified on GKE >= 1.30.1-gke.1156000 means "default"; only an explicit opt-out disables it.
        return None if wanted == "INSTALLATION_DISABLED" else "default"
    return wanted.lower()


def _node_object(ctx: ClusterContext, node_pool: dict[str, Any], name: str, *, zone: str, cpus: int,
                 gib: float, accel: str | None, driver: str | None, index: int) -> dict[str, Any]:
    labels, taints = _labels_and_taints(node_pool, name, zone=zone, accel=accel, driver=driver)
    pod_cidr = str(ipaddress.ip_network(f"10.{64 + index // 256}.{index % 256}.0/24"))
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "container.googleapis.com/instance_id": str(7000000000000000000 + index)}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints,
                 "providerID": f"gce://{ctx.cluster.project}/{zone}/{name}"},
        "status": _node_status(ctx, name, cpus=cpus, gib=gib, index=index),
    }


def _labels_and_taints(node_pool: dict[str, Any], name: str, *, zone: str, accel: str | None,
                       driver: str | None) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The labels GKE puts on a node of `node_pool` and its taints (GPU taint on GPU nodes)."""
    config = node_pool.get("config") or {}
    machine = config.get("machineType", "e2-medium")
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": machine, "beta.kubernetes.io/instance-type": machine,
        "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": zone.rsplit("-", 1)[0],
        "failure-domain.beta.kubernetes.io/zone": zone,
        POOL_LABEL: node_pool.get("name", ""), "cloud.google.com/gke-os-distribution": "cos",
        "cloud.google.com/gke-boot-disk": config.get("diskType", "pd-balanced"),
        "cloud.google.com/machine-family": machine.split("-")[0],
        **(config.get("labels") or {}),
    }
    if (config.get("gcfsConfig") or {}).get("enabled"):
        labels["cloud.google.com/gke-image-streaming"] = "true"
    taints = [{"key": t.get("key"), "value": t.get("value", ""), "effect": _EFFECTS.get(t.get("effect"), t.get("effect"))}
              for t in config.get("taints") or []]
    if accel:
        labels[ACCELERATOR_LABEL] = accel
        if driver:
            labels[DRIVER_LABEL] = driver
        if not any(t["key"] == GPU for t in taints):
            taints.append(dict(GPU_TAINT))
    return labels, taints


def _node_status(ctx: ClusterContext, name: str, *, cpus: int, gib: float, index: int) -> dict[str, Any]:
    capacity = {"cpu": str(cpus), "memory": format_memory(gib * 1024 ** 3), "pods": "110",
                "ephemeral-storage": "98831908Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    allocatable = dict(capacity, cpu=format_cpu(gke_allocatable_cpu(cpus)),
                       memory=format_memory(gke_allocatable_memory(gib)), **{"ephemeral-storage": "47060071478"})
    now = ctx.clock.rfc3339()
    conditions = [{"type": t, "status": "False", "reason": f"KubeletHasSufficient{r}",
                   "message": f"kubelet has sufficient {m}", "lastHeartbeatTime": now, "lastTransitionTime": now}
                  for t, r, m in (("MemoryPressure", "Memory", "memory available"),
                                  ("DiskPressure", "Disk", "disk space available"),
                                  ("PIDPressure", "PID", "PID available"))]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})
    return {"capacity": capacity, "allocatable": allocatable, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": f"10.128.0.{10 + index % 240}"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "osImage": "Container-Optimized OS from Google", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.28",
                         "kernelVersion": "6.6.97+",
                         # Always set by a real kubelet; the official client's models require them.
                         **_machine_ids(name)}}


def _machine_ids(name: str) -> dict[str, str]:
    """machineID, systemUUID and bootID, stable per node name (hex digests, like the real ones)."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    uuid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    return {"machineID": digest[32:64], "systemUUID": uuid, "bootID": f"{digest[:8]}-{digest[40:44]}-4"
            f"{digest[44:47]}-8{digest[47:50]}-{digest[50:62]}"}


def _gpu_ready(ctx: ClusterContext, name: str, gpus: int) -> None:
    def add(node: dict[str, Any]) -> None:
        node["status"]["capacity"][GPU] = str(gpus)
        node["status"]["allocatable"][GPU] = str(gpus)
    try:
        ctx.store.mutate(NODES, None, name, add)
    except NotFound:
        return


class NodeController(Reconciler):
    """Applies the `node_lost` fault to Ready nodes (the rest of a node's life is driven by GKE)."""

    name = "node-controller"
    watches = (NODES,)

    def reconcile(self) -> None:
        fault = self.ctx.faults.peek("node_lost")
        if fault is None:
            return
        for node in self.ctx.store.list(NODES)[0]:
            name = node["metadata"]["name"]
            prefix = fault.get("node_prefix")
            if prefix is not None and not name.startswith(str(prefix).rstrip("*")):
                continue
            if prefix is None and GPU not in node["status"].get("allocatable", {}):
                continue
            if not _is_ready(node):
                continue
            if self.ctx.faults.take("node_lost", node_prefix=prefix if prefix is not None else "\0") is None:
                return
            remove_node(self.ctx, name, reason="NodeLost")
            return


def _is_ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions") or [])

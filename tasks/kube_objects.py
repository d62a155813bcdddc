"""Small readers of Kubernetes objects as plain JSON dicts (pods, nodes, events, conditions). Pure."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
MESSAGE_CHARS = 300


def condition(conditions: list[Obj] | None, kind: str) -> Obj | None:
    """Return the condition of type `kind`, or None."""
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def name_of(obj: Obj) -> str:
    """Return the object's name ('?' when missing)."""
    return (obj.get("metadata") or {}).get("name", "?")


def ns_name(obj: Obj) -> str:
    """Return `namespace/name` for messages."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def labels_of(obj: Obj) -> dict[str, str]:
    """Return the object's labels (empty when none)."""
    return (obj.get("metadata") or {}).get("labels") or {}


def short(text: str | None) -> str:
    """Return `text` on one line, cut to MESSAGE_CHARS (tracebacks stay readable in a log line)."""
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def container_statuses(pod: Obj) -> list[tuple[str, Obj]]:
    """Return ("init container" | "container", status) pairs of a pod."""
    status = pod.get("status") or {}
    return ([("init container", cs) for cs in status.get("initContainerStatuses") or []]
            + [("container", cs) for cs in status.get("containerStatuses") or []])


def is_unscheduled(pod: Obj) -> bool:
    """True when the pod is not bound to a node yet."""
    scheduled = condition((pod.get("status") or {}).get("conditions"), "PodScheduled")
    return not (pod.get("spec") or {}).get("nodeName") and (scheduled is None or scheduled.get("status") != "True")


def is_pulling(pod: Obj) -> bool:
    """Scheduled, but some container has not started yet (image pull, container creation)."""
    if is_unscheduled(pod):
        return False
    statuses = [cs for kind, cs in container_statuses(pod) if kind == "container"]
    # A container that ran before and now waits is restarting (e.g. crash back-off), not pulling.
    return not statuses or any("waiting" in (cs.get("state") or {}) and not cs.get("restartCount")
                               for cs in statuses)


def gpu_nodes(nodes: list[Obj]) -> list[Obj]:
    """Return the nodes that have (or will have) GPUs."""
    return [n for n in nodes if GPU_NODE_LABEL in labels_of(n)
            or GPU_RESOURCE in ((n.get("status") or {}).get("capacity") or {})]


def gpu_allocatable(node: Obj) -> int:
    """Return the node's allocatable GPUs (0 until the driver is installed)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def is_node_ready(node: Obj) -> bool:
    """True when the node's Ready condition is True."""
    ready = condition((node.get("status") or {}).get("conditions"), "Ready")
    return bool(ready) and ready.get("status") == "True"


def event_object(event: Obj) -> str | None:
    """Return the name of the object an Event is about (core or events.k8s.io shape)."""
    ref = event.get("involvedObject") or event.get("regarding") or {}
    return ref.get("name")


def event_message(obj: Obj) -> str:
    """Return an Event's (or an object's status) message."""
    return obj.get("message") or obj.get("note") or (obj.get("status") or {}).get("message") or ""


def gpu_request(pod: Obj) -> int:
    """Return the GPUs the pod's containers ask for (limits, else requests; 0 when none)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = ((resources.get("limits") or {}).get(GPU_RESOURCE)
                 or (resources.get("requests") or {}).get(GPU_RESOURCE) or 0)
        try:
            total += int(value)
        except (TypeError, ValueError):
            continue
    return total


def gpu_room(node: Obj, pods_on_node: list[Obj]) -> int:
    """Return the node's allocatable GPUs that the unfinished pods bound to it do not request."""
    busy = sum(gpu_request(p) for p in pods_on_node
               if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
    return gpu_allocatable(node) - busy


def has_gpu_room(pod: Obj, nodes: list[Obj], room: dict[str, int]) -> bool:
    """True when a node in `room` (free GPUs by node name) matches the pod's nodeSelector and has the
    GPUs it asks for: a scheduler refusal of the pod is then older than that room."""
    need, wanted = gpu_request(pod), ((pod.get("spec") or {}).get("nodeSelector") or {})
    by_name = {name_of(n): n for n in nodes}
    return need > 0 and any(
        free >= need and name in by_name and all(labels_of(by_name[name]).get(k) == v for k, v in wanted.items())
        for name, free in room.items())

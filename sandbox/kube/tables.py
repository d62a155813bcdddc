"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for.

Columns follow the real printers for the kinds we serve (a subset) and a CRD's
`additionalPrinterColumns` for custom resources; Age is measured on the sandbox's clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sandbox.kube.resources import ResourceType

Column = tuple[str, str, Callable[[dict[str, Any]], Any]]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def age(created: str | None, now_s: float) -> str:
    """`kubectl`'s short human duration: 45s, 12m, 3h4m, 5d."""
    if not created:
        return "<unknown>"
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    seconds = max(0, int(now_s - then.timestamp()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _path(obj: Any, json_path: str) -> Any:
    node = obj
    for part in json_path.strip().lstrip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: dict[str, Any]) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if waiting.get("reason") or terminated.get("reason"):
            return waiting.get("reason") or terminated.get("reason")
    return status.get("reason") or status.get("phase") or "Unknown"


def _node_status(node: dict[str, Any]) -> str:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
    return "Ready" if ready.get("status") == "True" else "NotReady"


def _service_ports(svc: dict[str, Any]) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


NAME = "<name>"
AGE = "<age>"


def _event_object(e: dict[str, Any]) -> str:
    ref = e.get("involvedObject") or e.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _last_seen(now: float) -> Callable[[dict[str, Any]], Any]:
    return lambda e: age(e.get("lastTimestamp") or (e.get("eventTime") or "")[:19] + "Z"
                         if e.get("lastTimestamp") or e.get("eventTime") else None, now)


# Column name, type, value; NAME and AGE stand for the object's name and its age, where the real
# printers put them.
_BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "Pod": [NAME, ("Ready", "string", _pod_ready), ("Status", "string", _pod_status),
            ("Restarts", "integer", lambda p: sum(s.get("restartCount", 0) for s in
                                                  (p.get("status") or {}).get("containerStatuses") or [])), AGE],
    "Node": [NAME, ("Status", "string", _node_status), ("Roles", "string", lambda n: "<none>"), AGE,
             ("Version", "string", lambda n: _path(n, ".status.nodeInfo.kubeletVersion") or "")],
    "Deployment": [NAME, ("Ready", "string", lambda d: f"{_path(d, '.status.readyReplicas') or 0}/"
                                                        f"{_path(d, '.spec.replicas') or 0}"),
                   ("Up-to-date", "integer", lambda d: _path(d, ".status.updatedReplicas") or 0),
                   ("Available", "integer", lambda d: _path(d, ".status.availableReplicas") or 0), AGE],
    "Service": [NAME, ("Type", "string", lambda s: _path(s, ".spec.type")),
                ("Cluster-IP", "string", lambda s: _path(s, ".spec.clusterIP")),
                ("External-IP", "string", lambda s: "<none>"), ("Port(s)", "string", _service_ports), AGE],
    "Namespace": [NAME, ("Status", "string", lambda n: _path(n, ".status.phase")), AGE],
    "DaemonSet": [NAME, *[(title, "integer", lambda d, p=path: _path(d, p) or 0) for title, path in (
        ("Desired", ".status.desiredNumberScheduled"), ("Current", ".status.currentNumberScheduled"),
        ("Ready", ".status.numberReady"), ("Up-to-date", ".status.updatedNumberScheduled"),
        ("Available", ".status.numberAvailable"))],
        ("Node Selector", "string", lambda d: _node_selector(d)), AGE],
}


def _node_selector(ds: dict[str, Any]) -> str:
    selector = _path(ds, ".spec.template.spec.nodeSelector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


def _columns(rtype: ResourceType, now: float) -> list[Any]:
    if rtype.crd_name is not None:
        cols = [(c["name"], c.get("type", "string"), lambda o, p=c["jsonPath"]: _path(o, p))
                for c in rtype.printer_columns]
        return [NAME, *cols] if cols else [NAME, AGE]
    if rtype.kind == "CustomResourceDefinition":
        return [NAME, ("Created At", "date", lambda o: o["metadata"].get("creationTimestamp"))]
    if rtype.kind == "Event":
        return [("Last Seen", "string", _last_seen(now)), ("Type", "string", lambda e: e.get("type")),
                ("Reason", "string", lambda e: e.get("reason")), ("Object", "string", _event_object),
                ("Message", "string", lambda e: e.get("message") or e.get("note"))]
    return _BUILTIN_COLUMNS.get(rtype.kind, [NAME, AGE])


def _definition(column: Any) -> dict[str, Any]:
    if column == NAME:
        return {"name": "Name", "type": "string", "format": "name",
                "description": "Name must be unique within a namespace.", "priority": 0}
    if column == AGE:
        return {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp", "priority": 0}
    return {"name": column[0], "type": column[1], "format": "", "description": column[0], "priority": 0}


def to_table(rtype: ResourceType, items: list[dict[str, Any]], resource_version: str, *, now: float,
             include: str = "Metadata") -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `items` with the columns `kubectl get` shows for `rtype`."""
    columns = _columns(rtype, now)
    rows = []
    for obj in items:
        cells = [obj["metadata"]["name"] if c == NAME else age(obj["metadata"].get("creationTimestamp"), now)
                 if c == AGE else _cell(c[2](obj), rtype) for c in columns]
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": [_definition(c) for c in columns], "rows": rows}


def _cell(value: Any, rtype: ResourceType) -> Any:
    # The CRD table convertor sends null for a missing jsonPath; built-in printers write <none>.
    return value if value is not None or rtype.crd_name else "<none>"

"""Kubernetes Events as the real components record them (core/v1, so `kubectl get events` shows them).

Repeats of the same (object, type, reason, message) are aggregated into one Event whose `count` and
`lastTimestamp` move, as the client-go event recorder does, instead of piling up new objects.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.store import AlreadyExists, NotFound

EVENTS = ("", "events")

_lock = threading.Lock()
_seen: dict[tuple[int, str, str, str, str], str] = {}  # (ctx id, object uid, type, reason, message) -> name


def record_event(ctx: ClusterContext, obj: dict[str, Any], event_type: str, reason: str, message: str, *,
                 component: str, host: str | None = None) -> None:
    """Record (or bump the count of) an Event about `obj` from `component`."""
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    key = (id(ctx), meta.get("uid", ""), event_type, reason, message)
    now = ctx.clock.rfc3339()
    with _lock:
        name = _seen.get(key)
    if name is not None:
        try:
            ctx.store.mutate(EVENTS, namespace, name, lambda e: e.update(
                count=int(e.get("count", 1)) + 1, lastTimestamp=now))
            return
        except NotFound:
            pass
    name = f"{meta['name']}.{secrets.token_hex(8)}"
    source = {"component": component, **({"host": host} if host else {})}
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""),
                           "name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": reason, "message": message, "type": event_type, "source": source,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": host or "",
    }
    try:
        ctx.store.create(EVENTS, event)
    except AlreadyExists:
        return
    with _lock:
        _seen[key] = name


def events_for(ctx: ClusterContext, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Events whose involved object is `name` (for tests and inventory), oldest first."""
    items, _ = ctx.store.list(EVENTS, namespace)
    return [e for e in items if e.get("involvedObject", {}).get("name") == name]


def forget_events(ctx: ClusterContext) -> None:
    """Drop the aggregation index of a stopped cluster."""
    with _lock:
        for key in [k for k in _seen if k[0] == id(ctx)]:
            del _seen[key]

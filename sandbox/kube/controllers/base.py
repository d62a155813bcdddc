"""The loop every simulated controller shares: level-triggered reconciles on the sandbox clock.

A controller watches a few resources in the store; any change to them (or a timer it asked for)
schedules one `reconcile()` on the clock's timer thread. All controllers of all clusters run their
reconciles on that one thread, so they never race each other; the API server may still write from
its own threads, which is why status writes go through `ObjectStore.mutate` and only when the
content changes (a write that changes nothing would wake every watcher for no reason).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.store import NotFound, WatchEvent

log = logging.getLogger("sandbox.kube.controllers")

PODS = ("", "pods")
NODES = ("", "nodes")
SERVICES = ("", "services")
EVENTS = ("", "events")
NAMESPACES = ("", "namespaces")
DEPLOYMENTS = ("apps", "deployments")
REPLICASETS = ("apps", "replicasets")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
RAYSERVICES = ("ray.io", "rayservices")
RAYCLUSTERS = ("ray.io", "rayclusters")
RAYJOBS = ("ray.io", "rayjobs")

# A safety net only: every state change already wakes the controllers that care.
DEFAULT_RESYNC_S = 60.0
# Never resync more often than this in real seconds, whatever the time scale (CPU guard).
MIN_REAL_INTERVAL_S = 0.05


class Reconciler:
    """Base class: subclasses set `watches` and implement `reconcile()`.

    `start(ctx)` subscribes to the store and runs a first reconcile; `wake_in(s)` asks for another
    reconcile after `s` simulated seconds (duplicates collapse to the earliest); `stop()` ends it.
    """

    watches: tuple[tuple[str, str], ...] = ()
    name = "controller"

    def __init__(self) -> None:
        self.ctx: ClusterContext | None = None
        self._lock = threading.Lock()
        self._queued = False
        self._wake_at: float | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, ctx: ClusterContext) -> None:
        self.ctx = ctx
        self.on_start()
        self._unsubscribe = ctx.store.subscribe(self._on_event)
        self.kick()
        self._schedule_resync()

    def stop(self) -> None:
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_start(self) -> None:
        """Hook for subclasses that need set-up before the first reconcile."""

    def reconcile(self) -> None:
        raise NotImplementedError

    # -- triggering -----------------------------------------------------------------------------
    def kick(self) -> None:
        """Reconcile as soon as the timer thread is free (collapses repeated kicks)."""
        with self._lock:
            if self._queued or self._stopped:
                return
            self._queued = True
        self.ctx.clock.call_later(0, self._run)

    def wake_in(self, sim_s: float) -> None:
        """Reconcile again after `sim_s` simulated seconds (keeps only the earliest pending wake)."""
        clock = self.ctx.clock
        due = clock.elapsed_s() + max(sim_s, clock.time_scale * 0.001)
        with self._lock:
            if self._stopped or (self._wake_at is not None and self._wake_at <= due
                                 and self._wake_at > clock.elapsed_s()):
                return
            self._wake_at = due
        clock.call_at(due, lambda: self._on_wake(due))

    def _on_wake(self, due: float) -> None:
        with self._lock:
            if self._wake_at == due:
                self._wake_at = None
        self.kick()

    def _on_event(self, event: WatchEvent) -> None:
        if event.resource in self.watches:
            self.kick()

    def _run(self) -> None:
        with self._lock:
            self._queued = False
            if self._stopped:
                return
        try:
            self.reconcile()
        except Exception:  # noqa: BLE001 - a controller bug must not stop the others; it is logged
            log.exception("%s: reconcile failed", self.name)

    def _schedule_resync(self) -> None:
        if self._stopped:
            return
        clock = self.ctx.clock
        resync_s = float(self.ctx.profile.get("kube", {}).get("controller_resync_s", DEFAULT_RESYNC_S))
        interval = max(resync_s, MIN_REAL_INTERVAL_S * clock.time_scale)

        def tick() -> None:
            self.kick()
            self._schedule_resync()
        clock.call_later(interval, tick)

    # -- store helpers --------------------------------------------------------------------------
    def write_status(self, resource: tuple[str, str], obj: dict[str, Any], status: dict[str, Any]) -> bool:
        """Replace `obj`'s status with `status` if it differs; True when a write happened."""
        if obj.get("status") == status:
            return False
        meta = obj["metadata"]
        try:
            self.ctx.store.mutate(resource, meta.get("namespace"), meta["name"],
                                  lambda live: live.__setitem__("status", copy.deepcopy(status)))
        except NotFound:
            return False
        obj["status"] = status
        return True

    def profile(self, key: str, default: float) -> float:
        return float(self.ctx.profile.get("kube", {}).get(key, default))


def owner_reference(owner: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to `owner`, as controllers set them (blockOwnerDeletion for GC ordering)."""
    return {"apiVersion": owner.get("apiVersion", "v1"), "kind": owner.get("kind", ""),
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": controller, "blockOwnerDeletion": True}


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def condition(obj_status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in obj_status.get("conditions") or [] if c.get("type") == ctype), None)


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, *, now: str,
                  reason: str = "", message: str = "", extra: dict[str, Any] | None = None) -> None:
    """Upsert condition `ctype`; `lastTransitionTime` moves only when `status` changes."""
    current = next((c for c in conditions if c.get("type") == ctype), None)
    new = {"type": ctype, "status": status, "reason": reason, "message": message, **(extra or {})}
    if current is not None and current.get("status") == status:
        new["lastTransitionTime"] = current.get("lastTransitionTime", now)
    else:
        new["lastTransitionTime"] = now
    if current is None:
        conditions.append(new)
    else:
        current.clear()
        current.update(new)


def take_fault(faults: Any, kind: str, *, key: str, value: str,
               applies: Callable[[dict[str, Any]], bool] = lambda fault: True, **context: str) -> dict[str, Any] | None:
    """Fire the first `kind` fault whose `key` prefix (if any) matches `value` and whose other
    parameters named in `context` (e.g. `node_type`) equal the context's values.

    Faults name objects by prefix (`pod_prefix: deepseek-r1`, a trailing `*` allowed); a fault that
    names neither a prefix nor any `context` key matches what `applies` accepts (its default target).
    """
    for fault in faults.list():
        if fault["kind"] != kind or any(fault.get(k) not in (None, v) for k, v in context.items()):
            continue
        prefix = fault.get(key)
        if prefix is not None and not value.startswith(str(prefix).rstrip("*")):
            continue
        if prefix is None and not any(k in fault for k in context) and not applies(fault):
            continue
        return faults.take(kind, **{key: prefix if prefix is not None else "\0"}, **context)
    return None

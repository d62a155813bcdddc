"""Deletion as the real control plane does it: graceful pod termination, namespace teardown, and
the garbage collector that follows ownerReferences (Background, Foreground and Orphan propagation).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from sandbox.kube.context import ClusterContext
from sandbox.kube.store import NotFound, ResourceKey, WatchEvent

log = logging.getLogger("sandbox.kube.gc")

PODS: ResourceKey = ("", "pods")
NAMESPACES: ResourceKey = ("", "namespaces")
CRDS: ResourceKey = ("apiextensions.k8s.io", "customresourcedefinitions")
FOREGROUND = "foregroundDeletion"
ObjectRef = tuple[ResourceKey, str | None, str]


class Deleter:
    """Delete objects honouring finalizers, grace periods and propagation; runs the GC thread."""

    def __init__(self, ctx: ClusterContext):
        self.ctx, self.store = ctx, ctx.store
        self._owned: dict[str, set[ObjectRef]] = {}   # owner uid -> dependents
        self._owners: dict[ObjectRef, set[str]] = {}  # dependent -> owner uids
        self._foreground: dict[str, ObjectRef] = {}   # uid -> object waiting for its dependents
        self._work: queue.Queue[WatchEvent | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._unsubscribe = None

    # -- API-facing -----------------------------------------------------------------------------
    def delete(self, rtype: Any, live: dict[str, Any], *, policy: str = "Background",
               grace_s: int | None = None) -> dict[str, Any] | None:
        """Delete `live`; return it if it still exists afterwards (finalizers, grace), else None."""
        return self.delete_key(rtype.key, live, policy=policy, grace_s=grace_s)

    def delete_key(self, key: ResourceKey, live: dict[str, Any], *, policy: str = "Background",
                   grace_s: int | None = None) -> dict[str, Any] | None:
        meta = live["metadata"]
        namespace, name, uid = meta.get("namespace"), meta["name"], meta.get("uid", "")
        with self.store.lock:
            if policy == "Orphan":
                self._orphan(uid)
            elif policy == "Foreground" and self._dependents(uid):
                self.store.mutate(key, namespace, name, lambda o: o["metadata"].setdefault(
                    "finalizers", []).append(FOREGROUND) if FOREGROUND not in o["metadata"].get("finalizers", [])
                    else None)
            if key == NAMESPACES:
                return self._delete_namespace(live)
            if key == CRDS:
                self._delete_instances(live)
            if key == PODS and self._is_running(live):
                grace = grace_s if grace_s is not None else \
                    int((live.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                if grace > 0:
                    pod = self.store.mark_deleting(key, namespace, name, grace)
                    self.ctx.clock.call_later(grace, lambda: self._finish(key, namespace, name, uid))
                    return pod
            gone = self.store.delete(key, namespace, name)
            return gone if gone["metadata"].get("finalizers") else None

    @staticmethod
    def _is_running(pod: dict[str, Any]) -> bool:
        return bool((pod.get("spec") or {}).get("nodeName")) and \
            (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def _finish(self, key: ResourceKey, namespace: str | None, name: str, uid: str) -> None:
        with self.store.lock:
            live = self.store.get(key, namespace, name)
            if live is not None and live["metadata"].get("uid") == uid:
                self.store.delete(key, namespace, name)

    def _delete_namespace(self, live: dict[str, Any]) -> dict[str, Any] | None:
        name = live["metadata"]["name"]
        self.store.mutate(NAMESPACES, None, name, lambda ns: ns.setdefault("status", {}).update(phase="Terminating"))
        ns = self.store.mark_deleting(NAMESPACES, None, name, 0)
        for key in self.store.resources():
            for obj in self.store.list(key, name)[0]:
                if not obj["metadata"].get("deletionTimestamp"):
                    self._safe_delete(key, obj)
        return None if self._finalize_namespace(name) else ns

    def _delete_instances(self, crd: dict[str, Any]) -> None:
        """Delete every custom resource of `crd`, as the CRD's cleanup finalizer does."""
        spec = crd.get("spec") or {}
        resource = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        for obj in self.store.list(resource)[0]:
            self._safe_delete(resource, obj)

    def _finalize_namespace(self, name: str) -> bool:
        """Remove a terminating namespace once it is empty. Returns whether it is gone."""
        with self.store.lock:
            ns = self.store.get(NAMESPACES, None, name)
            if ns is None:
                return True
            if not ns["metadata"].get("deletionTimestamp"):
                return False
            if any(self.store.list(key, name)[0] for key in self.store.resources() if key != NAMESPACES):
                return False
            self.store.delete(NAMESPACES, None, name)
            return True

    def _safe_delete(self, key: ResourceKey, obj: dict[str, Any]) -> None:
        try:
            self.delete_key(key, obj)
        except NotFound:
            pass

    # -- ownership index and GC loop ------------------------------------------------------------
    def _dependents(self, uid: str) -> set[ObjectRef]:
        with self.store.lock:  # the index is updated by store callbacks, under this lock
            return set(self._owned.get(uid, set()))

    def _orphan(self, uid: str) -> None:
        for key, namespace, name in self._dependents(uid):
            try:
                self.store.mutate(key, namespace, name, lambda o: o["metadata"].update(ownerReferences=[
                    r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]))
            except NotFound:
                pass

    def start(self) -> None:
        with self.store.lock:
            for key in self.store.resources():
                for obj in self.store.list(key)[0]:
                    self._index(key, obj, present=True)
            self._unsubscribe = self.store.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="sandbox-kube-gc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self._work.put(None)
        if self._thread:
            self._thread.join(timeout=5)

    def _index(self, key: ResourceKey, obj: dict[str, Any], *, present: bool) -> None:
        meta = obj.get("metadata") or {}
        ref = (key, meta.get("namespace"), meta.get("name", ""))
        for owner_uid in self._owners.pop(ref, set()):
            self._owned.get(owner_uid, set()).discard(ref)
        self._foreground.pop(meta.get("uid", ""), None)
        if not present:
            return
        uids = {owner.get("uid", "") for owner in meta.get("ownerReferences") or []}
        for owner_uid in uids:
            self._owned.setdefault(owner_uid, set()).add(ref)
        if uids:
            self._owners[ref] = uids
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            self._foreground[meta.get("uid", "")] = ref

    def _on_event(self, event: WatchEvent) -> None:
        self._index(event.resource, event.object, present=event.type != "DELETED")
        meta = event.object.get("metadata") or {}
        if event.type == "DELETED" or (meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or [])):
            self._work.put(event)

    def _run(self) -> None:
        while (event := self._work.get()) is not None:
            try:
                self._collect(event)
            except Exception:  # noqa: BLE001 - the GC must outlive one bad object
                log.exception("garbage collection after %s %s failed", event.type, event.resource)

    def _collect(self, event: WatchEvent) -> None:
        meta = event.object["metadata"]
        uid = meta.get("uid", "")
        if event.type == "DELETED" or FOREGROUND in (meta.get("finalizers") or []):
            for key, namespace, name in self._dependents(uid):
                live = self.store.get(key, namespace, name)
                if live is not None and not live["metadata"].get("deletionTimestamp"):
                    self._safe_delete(key, live)
        if event.type == "DELETED":
            for owner in meta.get("ownerReferences") or []:
                self._release_foreground(owner.get("uid", ""))
            if meta.get("namespace"):
                self._finalize_namespace(meta["namespace"])
        elif not self._dependents(uid):
            self._release_foreground(uid)

    def _release_foreground(self, owner_uid: str) -> None:
        """Drop the foregroundDeletion finalizer of the owner `owner_uid` once it has no dependents."""
        if self._dependents(owner_uid):
            return
        with self.store.lock:
            ref = self._foreground.get(owner_uid)
        if ref is None:
            return
        key, namespace, name = ref
        try:
            self.store.mutate(key, namespace, name, lambda o: o["metadata"].update(
                finalizers=[f for f in o["metadata"].get("finalizers") or [] if f != FOREGROUND]))
        except NotFound:
            pass

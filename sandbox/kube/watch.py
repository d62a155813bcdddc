"""Watch streams: `?watch=true` answered with newline-delimited JSON events until the timeout.

Semantics follow the real server: no resourceVersion (or "0") starts with a synthetic ADDED for each
existing object; a resourceVersion resumes right after it, or yields one ERROR event with a 410
Status when history no longer reaches back that far; `allowWatchBookmarks` adds BOOKMARK events;
an object that stops matching the label selector is reported DELETED, one that starts, ADDED.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import Matcher
from sandbox.kube.store import Gone, ObjectStore, WatchEvent
from sandbox.kube.verbs import shaped

DEFAULT_TIMEOUT_S = 1800.0     # the real server picks 30-60 min; clients usually set timeoutSeconds
BOOKMARK_INTERVAL_S = 1.0      # real servers send one about every minute; our time runs faster


@dataclass
class WatchSpec:
    rtype: ResourceType
    namespace: str | None
    resource_version: str | None
    timeout_s: float
    bookmarks: bool
    labels: Matcher
    fields: Matcher
    disconnect_after_s: float | None = None     # injected `watch_disconnect` fault
    render: Callable[[dict[str, Any]], dict[str, Any]] | None = None   # e.g. to a Table for `kubectl get -w`

    def encode(self, kind: str, obj: dict[str, Any]) -> bytes:
        return _line(kind, self.render(obj) if self.render else obj)


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


def _expired(message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Expired", "code": 410}


class _Filter:
    """Turns store events into the events this watcher sees (namespace, selectors, transitions)."""

    def __init__(self, spec: WatchSpec):
        self.spec = spec

    def _match(self, obj: dict[str, Any]) -> bool:
        return self.spec.labels(obj) and self.spec.fields(obj)

    def __call__(self, event: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        obj = shaped(self.spec.rtype, event.object)
        if self.spec.namespace is not None and (obj.get("metadata") or {}).get("namespace") != self.spec.namespace:
            return None
        now = self._match(obj)
        if event.type == "DELETED":
            return ("DELETED", obj) if now else None
        if event.type == "ADDED":
            return ("ADDED", obj) if now else None
        # An in-place change (no previous object) never touches labels, so it matched before iff now.
        was = self._match(shaped(self.spec.rtype, event.previous)) if event.previous is not None else now
        if now:
            return ("MODIFIED" if was else "ADDED"), obj
        return ("DELETED", obj) if was else None


async def stream_events(store: ObjectStore, spec: WatchSpec) -> AsyncIterator[bytes]:
    """Yield encoded watch events for `spec` until its timeout (or an injected disconnect)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[WatchEvent] = asyncio.Queue()
    watched = _Filter(spec)

    def deliver(event: WatchEvent) -> None:
        if event.resource == spec.rtype.key:
            loop.call_soon_threadsafe(events.put_nowait, event)

    initial: list[dict[str, Any]] = []
    try:
        with store.lock:
            if spec.resource_version in (None, "", "0"):
                initial = store.list(spec.rtype.key, spec.namespace)[0]
                unsubscribe = store.subscribe(deliver)
            else:
                unsubscribe = store.subscribe_from(int(spec.resource_version), deliver)
    except Gone as e:
        yield _line("ERROR", _expired(str(e)))
        return
    try:
        for obj in (shaped(spec.rtype, o) for o in initial):
            if spec.labels(obj) and spec.fields(obj):
                yield spec.encode("ADDED", obj)
        async for chunk in _follow(store, spec, events, watched):
            yield chunk
    finally:
        unsubscribe()


async def _follow(store: ObjectStore, spec: WatchSpec, events: asyncio.Queue[WatchEvent],
                  watched: _Filter) -> AsyncIterator[bytes]:
    now = time.monotonic()
    deadline = now + spec.timeout_s
    if spec.disconnect_after_s is not None:
        deadline = min(deadline, now + spec.disconnect_after_s)
    next_bookmark = now + BOOKMARK_INTERVAL_S
    while (now := time.monotonic()) < deadline:
        wait = min(deadline, next_bookmark if spec.bookmarks else deadline) - now
        try:
            event = await asyncio.wait_for(events.get(), timeout=max(0.0, wait))
        except asyncio.TimeoutError:
            if spec.bookmarks and events.empty() and time.monotonic() >= next_bookmark:
                yield _line("BOOKMARK", {"kind": spec.rtype.kind, "apiVersion": spec.rtype.api_version,
                                         "metadata": {"resourceVersion": str(store.resource_version)}})
                next_bookmark = time.monotonic() + BOOKMARK_INTERVAL_S
            continue
        seen = watched(event)
        if seen is not None:
            yield spec.encode(*seen)

"""What every piece of one simulated cluster shares: its store, the clock, the profile, the faults,
and the registry of in-cluster HTTP servers that the API server's service proxy routes to.

The API server (`apiserver.py`) and the controllers (`controllers/`) only meet here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.store import ObjectStore


@dataclass
class HttpRequest:
    method: str
    path: str                      # path after the proxy prefix, starting with "/", no query
    query: str                     # raw query string, "" when none
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


HttpHandler = Callable[[HttpRequest], HttpResponse]


class PodPorts:
    """In-cluster HTTP servers, keyed by (namespace, pod name, container port).

    A simulated process "listens" by registering a handler for its pod and port; the service proxy
    resolves a Service to its ready pods (selector + Ready condition) and calls the handler of one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[tuple[str, str, int], HttpHandler] = {}

    def listen(self, namespace: str, pod: str, port: int, handler: HttpHandler) -> None:
        with self._lock:
            self._handlers[(namespace, pod, int(port))] = handler

    def close(self, namespace: str, pod: str, port: int | None = None) -> None:
        with self._lock:
            for key in [k for k in self._handlers if k[:2] == (namespace, pod) and port in (None, k[2])]:
                del self._handlers[key]

    def handler(self, namespace: str, pod: str, port: int) -> HttpHandler | None:
        with self._lock:
            return self._handlers.get((namespace, pod, int(port)))


class PodLogs:
    """Container logs, keyed by (namespace, pod, container), served at `pods/NAME/log` (`kubectl logs`).

    Simulated processes `write` lines; `restart` moves the current log to `--previous`, as the kubelet
    keeps the last terminated container's log.
    """

    def __init__(self, max_lines: int = 5000) -> None:
        self._lock = threading.Lock()
        self._max_lines = max_lines
        self._current: dict[tuple[str, str, str], list[str]] = {}
        self._previous: dict[tuple[str, str, str], list[str]] = {}

    def write(self, namespace: str, pod: str, container: str, line: str) -> None:
        with self._lock:
            lines = self._current.setdefault((namespace, pod, container), [])
            lines.append(line.rstrip("\n"))
            del lines[:-self._max_lines]

    def restart(self, namespace: str, pod: str, container: str) -> None:
        with self._lock:
            self._previous[(namespace, pod, container)] = self._current.pop((namespace, pod, container), [])

    def read(self, namespace: str, pod: str, container: str, *, previous: bool = False) -> list[str] | None:
        """The lines logged so far, or None when that container never logged (or had no previous run)."""
        with self._lock:
            lines = (self._previous if previous else self._current).get((namespace, pod, container))
            return list(lines) if lines is not None else None

    def forget(self, namespace: str, pod: str) -> None:
        with self._lock:
            for logs in (self._current, self._previous):
                for key in [k for k in logs if k[:2] == (namespace, pod)]:
                    del logs[key]


@dataclass
class ClusterContext:
    cluster: ClusterRef
    store: ObjectStore
    clock: ScaledClock
    profile: dict[str, Any]
    faults: Faults
    pod_ports: PodPorts = field(default_factory=PodPorts)
    pod_logs: PodLogs = field(default_factory=PodLogs)


T = TypeVar("T")


class PerCluster(Generic[T]):
    """State kept beside a cluster's controllers, one value per live ClusterContext (made on first use).

    Keyed by the context's id and checked by identity, so a new cluster that reuses a freed id starts fresh.
    """

    def __init__(self, make: Callable[[ClusterContext], T]):
        self._make = make
        self._lock = threading.Lock()
        self._values: dict[int, tuple[ClusterContext, T]] = {}

    def get(self, ctx: ClusterContext) -> T:
        with self._lock:
            entry = self._values.get(id(ctx))
            if entry is None or entry[0] is not ctx:
                entry = self._values[id(ctx)] = (ctx, self._make(ctx))
            return entry[1]

    def forget(self, ctx: ClusterContext) -> None:
        with self._lock:
            entry = self._values.get(id(ctx))
            if entry is not None and entry[0] is ctx:
                del self._values[id(ctx)]


class Controller(Protocol):
    """A simulated controller: started once per cluster, reacting to store events and timers."""

    def start(self, ctx: ClusterContext) -> None: ...

    def stop(self) -> None: ...

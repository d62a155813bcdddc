"""What every piece of one simulated cluster shares: its store, the clock, the profile, the faults,
and the registry of in-cluster HTTP servers that the API server's service proxy routes to.

The API server (`apiserver.py`) and the controllers (`controllers/`) only meet here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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


@dataclass
class ClusterContext:
    cluster: ClusterRef
    store: ObjectStore
    clock: ScaledClock
    profile: dict[str, Any]
    faults: Faults
    pod_ports: PodPorts = field(default_factory=PodPorts)


class Controller(Protocol):
    """A simulated controller: started once per cluster, reacting to store events and timers."""

    def start(self, ctx: ClusterContext) -> None: ...

    def stop(self) -> None: ...

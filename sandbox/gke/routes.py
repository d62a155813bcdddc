"""HTTP for the simulated GKE: the container v1/v1beta1 REST paths, legacy zone paths, and Service Usage.

One catch-all endpoint records every request (for `GET /_sandbox/requests`), applies injected
`transient` faults, dispatches on (method, path) and renders the result for the API version called.
Handlers run in a worker thread: they take the state lock and may call the Kubernetes hooks.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.gke import errors, wire
from sandbox.gke.service import GkeService

_LOC = r"^/(?P<v>v1|v1beta1)/projects/(?P<p>[^/]+)/(?:locations|zones)/(?P<l>[^/]+)"
_CLUSTER = _LOC + r"/clusters/(?P<c>[^/:]+)"
Handler = Callable[[GkeService, dict[str, str], bytes], tuple[str, dict[str, Any]]]

# (method, path pattern, handler returning (response type name, stored result))
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [(m, re.compile(p + "$"), h) for m, p, h in [
    ("POST", _LOC + "/clusters", lambda s, g, b: ("Operation", s.create_cluster(g["v"], g["p"], g["l"], b))),
    ("GET", _LOC + "/clusters", lambda s, g, b: ("ListClustersResponse", s.list_clusters(g["p"], g["l"]))),
    ("GET", _CLUSTER, lambda s, g, b: ("Cluster", s.get_cluster(g["p"], g["l"], g["c"]))),
    ("DELETE", _CLUSTER, lambda s, g, b: ("Operation", s.delete_cluster(g["p"], g["l"], g["c"]))),
    ("POST", _CLUSTER + ":setResourceLabels",
     lambda s, g, b: ("Operation", s.set_cluster_labels(g["v"], g["p"], g["l"], g["c"], b))),
    ("PUT", _CLUSTER + r"/nodePools/(?P<n>[^/:]+)",
     lambda s, g, b: ("Operation", s.update_node_pool(g["v"], g["p"], g["l"], g["c"], g["n"], b))),
    ("POST", _CLUSTER + "/nodePools",
     lambda s, g, b: ("Operation", s.create_node_pool(g["v"], g["p"], g["l"], g["c"], b))),
    ("GET", _CLUSTER + "/nodePools",
     lambda s, g, b: ("ListNodePoolsResponse", s.list_node_pools(g["p"], g["l"], g["c"]))),
    ("GET", _CLUSTER + r"/nodePools/(?P<n>[^/:]+)",
     lambda s, g, b: ("NodePool", s.get_node_pool(g["p"], g["l"], g["c"], g["n"]))),
    ("DELETE", _CLUSTER + r"/nodePools/(?P<n>[^/:]+)",
     lambda s, g, b: ("Operation", s.delete_node_pool(g["p"], g["l"], g["c"], g["n"]))),
    ("GET", _LOC + "/operations",
     lambda s, g, b: ("ListOperationsResponse", s.list_operations(g["p"], g["l"]))),
    ("GET", _LOC + r"/operations/(?P<o>[^/:]+)", lambda s, g, b: ("Operation", s.get_operation(g["p"], g["l"], g["o"]))),
    ("GET", _LOC + "/(?:serverConfig|serverconfig)",
     lambda s, g, b: ("ServerConfig", s.server_config(g["p"], g["l"]))),
]]

_SERVICE = re.compile(r"^/v1/projects/(?P<p>[^/]+)/services/(?P<s>[^/:]+)(?P<enable>:enable)?$")
# Services the simulated project has enabled (gcloud checks Container File System for image streaming).
ENABLED_SERVICES = ("container.googleapis.com", "compute.googleapis.com", "containerfilesystem.googleapis.com")


class RequestLog:
    """Every API request received, in order: method, path, query, parsed body, answer status."""

    def __init__(self, clock: ScaledClock):
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def add(self, method: str, path: str, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """Record a request as it arrives; the caller sets `status` once answered."""
        entry = {"method": method, "path": path, "query": query, "body": _parsed(body),
                 "time": self._clock.rfc3339(), "elapsed_s": round(self._clock.elapsed_s(), 3), "status": None}
        with self._lock:
            entry["seq"] = len(self._entries)
            self._entries.append(entry)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Copies of every entry, oldest first."""
        with self._lock:
            return [dict(e) for e in self._entries]


def _parsed(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def gke_endpoint(service: GkeService, faults: Faults, log: RequestLog):
    """The ASGI endpoint serving every GKE and Service Usage path."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        query = dict(request.query_params)
        entry = log.add(request.method, request.url.path, query, body)
        status, payload = await run_in_threadpool(_answer, service, faults, request.method,
                                                  request.url.path, query, body)
        entry["status"] = status
        return Response(wire.dumps(payload), status_code=status, media_type="application/json")

    return endpoint


def _answer(service: GkeService, faults: Faults, method: str, path: str, query: dict[str, str],
            body: bytes) -> tuple[int, Any]:
    slow = faults.take("slow_response", method=method, path=path)
    if slow:    # real seconds: what a client's own timeout (also real seconds) runs into
        time.sleep(float(slow.get("delay_s", 30)))
    fault = faults.take("transient", method=method, path=path)
    try:
        if fault and not fault.get("applied"):
            raise errors.transient(int(fault.get("status", 503)))
        result = _dispatch(service, method, path, query, body)
        if fault:   # the request took effect, but its answer is lost (a retried create then sees 409)
            raise errors.transient(int(fault.get("status", 503)))
        return 200, result
    except errors.GkeError as error:
        return error.code, error.body()
    except Exception:  # noqa: BLE001 - a sandbox bug answers 500 like a server would, and is logged
        logging.getLogger("sandbox.gke").exception("%s %s failed", method, path)
        return 500, errors.GkeError(500, "INTERNAL", "Internal error in the GKE sandbox.").body()


def _dispatch(service: GkeService, method: str, path: str, query: dict[str, str], body: bytes) -> Any:
    for route_method, pattern, handler in _ROUTES:
        match = pattern.match(path)
        if match and route_method == method:
            type_name, result = handler(service, match.groupdict(), body)
            return wire.render(match["v"], type_name, result, enum_ints=wire.wants_enum_ints(query))
    match = _SERVICE.match(path)
    if match and (method, bool(match["enable"])) in (("GET", False), ("POST", True)):
        return _service_usage(match["p"], match["s"], enable=bool(match["enable"]))
    raise errors.GkeError(404, "NOT_FOUND", f"Method {method} {path} is not served by the GKE sandbox.")


def _service_usage(project: str, service_name: str, *, enable: bool) -> dict[str, Any]:
    """Service Usage v1 `services.get` (and `:enable`, a done operation) for the project."""
    service = {"name": f"projects/{project}/services/{service_name}", "parent": f"projects/{project}",
               "config": {"name": service_name},
               "state": "ENABLED" if enable or service_name in ENABLED_SERVICES else "DISABLED"}
    if enable:
        return {"name": f"operations/noop.DONE_OPERATION.{service_name}", "done": True,
                "response": {"@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
                             "service": service}}
    return service

"""The service proxy subresource: `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH`.

Like the real API server it resolves the Service, its port (number or name -> targetPort), the pods
its selector picks that are Running and Ready, and forwards the request to one of them; here "one of
them" is the handler a simulated process registered in `ctx.pod_ports`. No ready endpoint -> 503
`no endpoints available for service "NAME"`; a ready pod with nothing listening -> 503 `error trying to reach service`.
"""

from __future__ import annotations

import itertools
from typing import Any

from sandbox.kube import status as st
from sandbox.kube.context import ClusterContext, HttpRequest, HttpResponse
from sandbox.kube.request import ApiRequest

SERVICES = ("", "services")
PODS = ("", "pods")
_HOP_HEADERS = {"authorization", "host", "connection", "content-length", "transfer-encoding", "accept-encoding"}


def split_service(spec: str) -> tuple[str, str]:
    """`http:svc:8000` / `svc:8000` / `svc` -> (name, port or "")."""
    parts = spec.split(":")
    if len(parts) == 3:
        return parts[1], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0], ""


def _service_port(service: dict[str, Any], port: str) -> dict[str, Any] | None:
    ports = (service.get("spec") or {}).get("ports") or []
    for entry in ports:
        if port and (str(entry.get("port")) == port or entry.get("name") == port):
            return entry
    if not port:
        return next((p for p in ports if not p.get("name")), ports[0] if len(ports) == 1 else None)
    return None


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready and not pod["metadata"].get("deletionTimestamp")


def _target_port(pod: dict[str, Any], target: Any) -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


class ServiceProxy:
    def __init__(self, ctx: ClusterContext):
        self.ctx = ctx
        self._turn = itertools.count()

    def endpoints(self, namespace: str, spec: str) -> list[tuple[str, int]]:
        """(pod, port) pairs a request to service `spec` may go to; raises 404/503 as the server does."""
        name, port = split_service(spec)
        service = self.ctx.store.get(SERVICES, namespace, name)
        if service is None:
            raise st.ApiError(404, "NotFound", f'services "{name}" not found', {"name": name, "kind": "services"})
        no_endpoints = st.ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        entry = _service_port(service, port)
        selector = (service.get("spec") or {}).get("selector") or {}
        if entry is None or not selector:
            raise no_endpoints
        pods = self.ctx.store.list(PODS, namespace)[0]
        ready = [p for p in pods if _ready(p)
                 and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
        found = [(p["metadata"]["name"], tp) for p in ready
                 if (tp := _target_port(p, entry.get("targetPort", entry.get("port")))) is not None]
        if not found:
            raise no_endpoints
        return found

    def forward(self, req: ApiRequest) -> HttpResponse:
        """Send `req` to one ready endpoint's handler and return its answer."""
        namespace = req.namespace or "default"
        candidates = self.endpoints(namespace, req.name or "")
        start = next(self._turn)
        for i in range(len(candidates)):
            pod, port = candidates[(start + i) % len(candidates)]
            handler = self.ctx.pod_ports.handler(namespace, pod, port)
            if handler is None:
                continue
            headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_HEADERS}
            return handler(HttpRequest(method=req.method, path="/" + req.rest.lstrip("/"),
                                       query=req.query_string, headers=headers, body=req.body))
        pod, port = candidates[0]
        raise st.ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {pod}:{port}: "
                          "connect: connection refused")

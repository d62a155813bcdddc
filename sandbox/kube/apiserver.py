"""One simulated cluster's Kubernetes API server: an ASGI app over the cluster's ObjectStore.

It authenticates as GKE does from the client's side (any non-empty bearer token), injects the
`kube_transient` and `watch_disconnect` faults, routes `/api` and `/apis` paths to discovery, the
REST verbs (`verbs.py`), watch streams (`watch.py`) and the service proxy (`proxy.py`), and renders
every failure as the Status object the real server sends. Bearer tokens are never logged.

Faults (from `ctx.faults`; `times`/`rate` as in sandbox/faults.py):
- `kube_transient` {status: 429|500|503|504 (default 503), path (exact, or a prefix ending in `*`),
  method, cluster (GKE cluster name)}: answer that Status instead (429/503 carry `Retry-After: 1`).
- `watch_disconnect` {path, cluster, after_s (default 0.2 real seconds)}: the next matching watch stream
  ends early, as when a load balancer drops an idle connection.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sandbox.kube import discovery, openapi
from sandbox.kube import status as st
from sandbox.kube.admission import Admission
from sandbox.kube.builtin_types import BuiltinDefaults
from sandbox.kube.context import ClusterContext
from sandbox.kube.deletion import Deleter
from sandbox.kube.logs import read_log
from sandbox.kube.proxy import ServiceProxy
from sandbox.kube.request import ApiReply, ApiRequest
from sandbox.kube.resources import ResourceTypes
from sandbox.kube.selectors import field_matcher, label_matcher
from sandbox.kube.tables import to_table, wants_table
from sandbox.kube.verbs import Verbs
from sandbox.kube.watch import DEFAULT_TIMEOUT_S, WatchSpec, stream_events

log = logging.getLogger("sandbox.kube.apiserver")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
REQUEST_LOG_LIMIT = 10_000


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None,
          warnings: list[str] | None = None) -> Response:
    response = Response(json.dumps(body, separators=(",", ":")), status_code=status,
                        media_type="application/json", headers=headers)
    for warning in warnings or []:
        response.raw_headers.append((b"warning", f'299 - "{json.dumps(warning)[1:-1]}"'.encode()))
    return response


class KubeApiServer:
    """The API server of one cluster; `app` is what `serving.start_server` runs."""

    def __init__(self, ctx: ClusterContext):
        self.ctx = ctx
        self.types = ResourceTypes(ctx.store)
        self.admission = Admission(self.types, BuiltinDefaults(), ctx.clock.rfc3339)
        self.deleter = Deleter(ctx)
        self.verbs = Verbs(ctx, self.admission, self.deleter)
        self.proxy = ServiceProxy(ctx)
        self.server_address = "127.0.0.1:443"
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.app = Starlette(routes=[Route("/{path:path}", self.dispatch, methods=METHODS)])

    def start(self) -> None:
        self.deleter.start()

    def stop(self) -> None:
        self.deleter.stop()

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append({"time": self.ctx.clock.rfc3339(), "method": request.method, "path": path,
                              "query": request.url.query})
        try:
            self._authenticate(request)
            self._inject_fault(request.method, path)
            return await self._route(request, path)
        except st.ApiError as e:
            return _json(e.status(), e.code, headers=e.headers)
        except Exception:  # noqa: BLE001 - a sandbox bug must still answer like a server would
            log.exception("%s %s failed", request.method, path)
            return _json(st.ApiError(500, "InternalError", "an error on the server has prevented the request "
                                     "from succeeding").status(), 500)

    @staticmethod
    def _authenticate(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise st.unauthorized()

    def _inject_fault(self, method: str, path: str) -> None:
        fault = self.ctx.faults.take("kube_transient", cluster=self.ctx.cluster.name, path=path, method=method)
        if fault is not None:
            raise st.transient(int(fault.get("status", 503)))

    async def _route(self, request: Request, path: str) -> Response:
        path = path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response("ok", media_type="text/plain")
        if path == "/version":
            return _json(discovery.SERVER_VERSION)
        if path.startswith("/openapi/"):
            return await run_in_threadpool(openapi.document, self.types, path, request.url.query)
        parts = [p for p in path.split("/") if p]
        if parts == ["api"]:
            return _json(discovery.api_versions(self.server_address))
        if parts == ["apis"]:
            return _json(discovery.api_group_list(self.types))
        if len(parts) == 2 and parts[0] == "apis":
            return _found(discovery.api_group(self.types, parts[1]))
        if len(parts) >= 2 and parts[0] in ("api", "apis"):
            return await self._resource(request, parts, path)
        raise st.page_not_found()

    async def _resource(self, request: Request, parts: list[str], path: str) -> Response:
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        if not rest:
            return _found(discovery.resource_list(self.types, group, version))
        watch = rest[0] == "watch"
        rest = rest[1:] if watch else rest
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group or rest[2] not in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        rtype = self.types.find(group, version, rest[0]) if rest else None
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise st.page_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        query = dict(request.query_params)
        watch = watch or query.get("watch") in ("true", "1")
        req = ApiRequest(method=request.method, path=path, rtype=rtype, namespace=namespace, name=name,
                         subresource=sub, query=query, headers={k.lower(): v for k, v in request.headers.items()},
                         body=await request.body(), rest=_after_proxy(path) if sub == "proxy" else "",
                         query_string=request.url.query)
        if sub == "proxy" and rtype.kind == "Service" and not rtype.group:
            answer = await run_in_threadpool(self.proxy.forward, req)
            return Response(answer.body, status_code=answer.status, headers=answer.headers)
        if sub == "log" and rtype.kind == "Pod" and not rtype.group and request.method == "GET":
            text = await run_in_threadpool(read_log, self.ctx, req)
            return Response(text, media_type="text/plain")
        if sub not in (None, "status") or (sub == "status" and not rtype.status_subresource) or len(rest) > 3:
            raise st.page_not_found()
        if rtype.namespaced and name is not None and namespace is None:
            raise st.page_not_found()
        if watch and request.method == "GET":
            return self._watch(req)
        reply: ApiReply = await run_in_threadpool(self._verb(req))
        deprecated = [rtype.deprecation_warning] if rtype.deprecation_warning else []
        return _json(reply.body, reply.status, reply.headers, deprecated + reply.warnings)

    def _verb(self, req: ApiRequest):
        method, named = req.method, req.name is not None
        table = {("GET", True): self.verbs.get, ("GET", False): self.verbs.list,
                 ("POST", False): self.verbs.create, ("PUT", True): self.verbs.update,
                 ("PATCH", True): self.verbs.patch, ("DELETE", True): self.verbs.delete,
                 ("DELETE", False): self.verbs.delete_collection}
        handler = table.get((method, named))
        if handler is None:
            raise st.method_not_allowed()
        return lambda: handler(req)

    def _watch(self, req: ApiRequest) -> Response:
        try:
            labels = label_matcher(req.query.get("labelSelector"))
            fields = field_matcher(req.query.get("fieldSelector"))
        except ValueError as e:
            raise st.bad_request(f"unable to parse requirement: {e}") from None
        fields_for_name = field_matcher(f"metadata.name={req.name}") if req.name else None
        disconnect = self.ctx.faults.take("watch_disconnect", cluster=self.ctx.cluster.name, path=req.path)
        spec = WatchSpec(rtype=req.rtype, namespace=req.namespace, resource_version=req.query.get("resourceVersion"),
                         timeout_s=float(req.query.get("timeoutSeconds") or DEFAULT_TIMEOUT_S),
                         bookmarks=req.query.get("allowWatchBookmarks") in ("true", "1"), labels=labels,
                         fields=(lambda o: fields(o) and fields_for_name(o)) if fields_for_name else fields,
                         disconnect_after_s=float(disconnect.get("after_s", 0.2)) if disconnect else None,
                         render=self._table_renderer(req) if wants_table(req.headers.get("accept", "")) else None)
        return StreamingResponse(stream_events(self.ctx.store, spec), media_type="application/json",
                                 headers={"cache-control": "no-cache, private"})


    def _table_renderer(self, req: ApiRequest):
        include = req.query.get("includeObject", "Metadata")
        return lambda obj: to_table(req.rtype, [obj], obj["metadata"].get("resourceVersion", ""),
                                    now=self.ctx.clock.now(), include=include)


def _found(body: dict[str, Any] | None) -> Response:
    if body is None:
        raise st.page_not_found()
    return _json(body)


def _after_proxy(path: str) -> str:
    marker = path.find("/proxy")
    return path[marker + len("/proxy"):] if marker >= 0 else ""

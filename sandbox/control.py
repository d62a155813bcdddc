"""The control API under `/_sandbox/` (JSON), for tests and demos; never part of what GKE serves.

- `GET  /_sandbox/inventory`  clusters, node pools (status, nodes, bill so far), Kubernetes objects per
  cluster, and `billing` (per pool and total node-seconds, GPU node-seconds, list-price cost).
- `GET  /_sandbox/requests`   every GKE/Service Usage request, in order (`?since=SEQ` for the newer ones).
- `POST /_sandbox/faults`     add one fault or a list of them; answers the stored faults (with ids).
- `GET  /_sandbox/faults`     the active faults.  `DELETE /_sandbox/faults[?kind=K]` clears them.
- `GET  /_sandbox/clock`      `{elapsed_s, now, now_rfc3339, time_scale}` in simulated time.

GKE fault kinds and their parameters (besides `times` and `rate`, see sandbox/faults.py); other
kinds (the Kubernetes side's) are accepted as given:
- `stockout` {zone, cluster, node_pool, machine_type, capacity, created}: the next GPU pool create
  there ends DONE with GCE_STOCKOUT, pool in ERROR; `created` VMs (default 0) come up and are billed
  until deleted. `capacity` is on-demand, spot, reservation, flex-start or queued (blocks.spec names).
- `transient` {status: 429|500|502|503|504 (default 503), path (prefix), method, applied}: answer
  with that error; `applied: true` carries the request out first (the answer is lost).
- `busy_cluster` {cluster}: mutations answer 400 "Operation ... is currently upgrading cluster".
- `quota` {metric (e.g. NVIDIA_H100_GPUS, CPUS), limit, cluster, node_pool}: creates answer 403.
- `concurrent_ops_quota` {cluster}: mutations answer 429 "Too many operations".
- `slow_response` {delay_s (REAL seconds, default 30), path (prefix), method}: answer late, so a client's
  own timeout fires (the request still takes effect).
- `auto_upgrade` {cluster, duration_s (default 120)}: when a cluster create finishes, GKE starts its
  own UPGRADE_MASTER operation (cluster RECONCILING and busy for `duration_s` simulated seconds).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.gke.errors import TRANSIENT_CODES

_COMMON = {"kind", "times", "rate"}
GKE_FAULT_PARAMS: dict[str, set[str]] = {
    "stockout": {"zone", "cluster", "node_pool", "machine_type", "project", "created", "capacity"},
    "transient": {"status", "path", "method", "applied"},
    "busy_cluster": {"cluster", "project", "location"},
    "quota": {"metric", "limit", "cluster", "node_pool", "project", "location"},
    "concurrent_ops_quota": {"cluster", "project", "location"},
    "auto_upgrade": {"cluster", "project", "location", "duration_s"},
    "slow_response": {"delay_s", "path", "method"},
}


def normalize_fault(fault: Any) -> dict[str, Any]:
    """Check a GKE fault's parameters (naming any unknown one) and normalize it for the registry."""
    if not isinstance(fault, dict) or not isinstance(fault.get("kind"), str):
        raise ValueError(f"a fault is a JSON object with a string 'kind'; got {fault!r}")
    kind = fault["kind"]
    if kind not in GKE_FAULT_PARAMS:
        return dict(fault)
    unknown = sorted(set(fault) - _COMMON - GKE_FAULT_PARAMS[kind])
    if unknown:
        raise ValueError(f"fault kind {kind!r} has no parameter(s) {unknown}; accepted: "
                         f"{sorted(_COMMON | GKE_FAULT_PARAMS[kind])}")
    fault = dict(fault)
    if kind in ("transient", "slow_response") and "path" in fault and not str(fault["path"]).endswith("*"):
        fault["path"] = f"{fault['path']}*"     # a path prefix, in the registry's wildcard form
    if kind == "slow_response" and not 0 <= float(fault.get("delay_s", 30)) <= 600:
        raise ValueError(f"slow_response fault 'delay_s' must be between 0 and 600 real seconds; "
                         f"got {fault['delay_s']!r}")
    if kind == "transient":
        status = fault.setdefault("status", 503)
        if status not in TRANSIENT_CODES:
            raise ValueError(f"transient fault 'status' must be one of {list(TRANSIENT_CODES)}; got {status!r}")
    if kind == "stockout" and int(fault.get("created", 0)) < 0:
        raise ValueError(f"stockout 'created' must be >= 0; got {fault['created']!r}")
    return fault


def control_routes(sandbox) -> list[Route]:
    """The `/_sandbox/...` routes over a `sandbox.app.Sandbox`."""

    async def inventory(request: Request) -> JSONResponse:
        return JSONResponse(sandbox.inventory())

    async def requests(request: Request) -> JSONResponse:
        return JSONResponse(sandbox.requests(int(request.query_params.get("since", 0))))

    async def faults(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(sandbox.faults.list())
        if request.method == "DELETE":
            sandbox.clear_faults(request.query_params.get("kind"))
            return JSONResponse({"cleared": True})
        try:
            body = json.loads(await request.body() or b"null")
            stored = [sandbox.inject(f) for f in (body if isinstance(body, list) else [body])]
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": {"code": 400, "message": str(error)}}, status_code=400)
        return JSONResponse(stored if isinstance(body, list) else stored[0])

    async def clock(request: Request) -> JSONResponse:
        return JSONResponse(sandbox.clock_status())

    return [Route("/_sandbox/inventory", inventory, methods=["GET"]),
            Route("/_sandbox/requests", requests, methods=["GET"]),
            Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/clock", clock, methods=["GET"])]

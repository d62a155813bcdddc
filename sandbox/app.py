"""The whole sandbox in one object: clock, faults, profile, the GKE API and control API on one port.

```python
with Sandbox(time_scale=600, profile="realistic", seed=0) as sandbox:
    client = container_v1.ClusterManagerClient(transport="rest",
        client_options={"api_endpoint": sandbox.gke_url}, credentials=AnonymousCredentials())
    ...
    sandbox.inventory()["billing"]["gpu_node_seconds"]
```

The Kubernetes side plugs in through `hooks` (a `sandbox.hooks.ClusterHooks`); without it each
cluster reports an endpoint that nothing serves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from sandbox.clock import DEFAULT_TIME_SCALE, ScaledClock
from sandbox.control import control_routes, normalize_fault
from sandbox.faults import Faults
from sandbox.gke.routes import RequestLog, gke_endpoint
from sandbox.gke.service import GkeService
from sandbox.hooks import ClusterHooks, NoKubernetes
from sandbox.profile import DEFAULT_PROFILE, load_profile
from sandbox.serving import ServerHandle, start_server

log = logging.getLogger("sandbox")
DEFAULT_PORT = 8089
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class Sandbox:
    """A running simulation of GKE (and, through `hooks`, of each cluster's Kubernetes).

    `kubernetes=True` gives every cluster a simulated Kubernetes (API server, KubeRay, Ray Serve);
    without it (or explicit `hooks`) clusters have an endpoint that nothing serves. `port=0` picks a
    free port. Start with `start()` or a `with` block; `stop()` stops the server, the clock and the
    hooks. Everything simulated runs on `clock`, `time_scale` times faster than real time.
    """

    def __init__(self, time_scale: float = DEFAULT_TIME_SCALE, profile: str = DEFAULT_PROFILE, seed: int = 0,
                 port: int = 0, hooks: ClusterHooks | None = None, kubernetes: bool = False):
        self.clock = ScaledClock(time_scale)
        self.faults = Faults(seed)
        self.profile: dict[str, Any] = load_profile(profile)
        if "gke" not in self.profile:
            raise ValueError(f"sandbox profile {profile!r} has no gke.yaml")
        if kubernetes and hooks is None:
            # Each cluster gets its own Kubernetes API server, controllers, KubeRay and Ray Serve.
            from sandbox.kube.clusters import KubeClusters

            hooks = KubeClusters(self.clock, self.profile, self.faults)
        self.hooks: ClusterHooks = hooks if hooks is not None else NoKubernetes()
        self.seed = seed
        self.port = port
        self.gke = GkeService(self.clock, self.profile["gke"], self.faults, self.hooks, seed)
        self._log = RequestLog(self.clock)
        self._server: ServerHandle | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def app(self) -> Starlette:
        """The ASGI app: control routes under /_sandbox/, everything else the GKE API."""
        routes = control_routes(self) + [
            Route("/{path:path}", gke_endpoint(self.gke, self.faults, self._log), methods=_METHODS)]
        return Starlette(routes=routes)

    def start(self) -> Sandbox:
        """Serve on 127.0.0.1 (a free port if `port` is 0); return self."""
        if self._server is None:
            started = time.monotonic()
            self._server = start_server(self.app(), port=self.port, name="sandbox-gke")
            self.port = self._server.port
            log.info("sandbox GKE API on %s (started in %.2fs)", self.gke_url, time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Stop serving, the clock and the Kubernetes side."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.clock.stop()
        stop_hooks = getattr(self.hooks, "stop", None)
        if callable(stop_hooks):
            stop_hooks()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def gke_url(self) -> str:
        """Base URL of the GKE API (and Service Usage), e.g. `http://127.0.0.1:8089`."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started; call start() or use it in a with block")
        return self._server.base_url

    # -- control (same as /_sandbox/...) --------------------------------------------------------
    def inventory(self) -> dict[str, Any]:
        """Clusters, node pools (status, nodes, GPU node-seconds so far), Kubernetes objects, bill."""
        return dict(self.gke.inventory(), clock=self.clock_status())

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Every GKE API request received so far, in order (those with `seq >= since`)."""
        return [e for e in self._log.entries() if e["seq"] >= since]

    def inject(self, fault: dict[str, Any]) -> dict[str, Any]:
        """Add a fault (see sandbox/control.py for kinds); return it as stored, with its id."""
        return self.faults.add(normalize_fault(fault))

    def clear_faults(self, kind: str | None = None) -> None:
        """Remove every fault, or those of one `kind`."""
        self.faults.clear(kind)

    def clock_status(self) -> dict[str, Any]:
        """Simulated time now: `{elapsed_s, now, now_rfc3339, time_scale, anchor_epoch_s}`.

        `anchor_epoch_s` is the real time simulated time started from: a client that wants to agree
        with the sandbox on "now" computes `anchor + (real now - anchor) * time_scale`.
        """
        return {"elapsed_s": round(self.clock.elapsed_s(), 3), "now": self.clock.now(),
                "now_rfc3339": self.clock.rfc3339(), "time_scale": self.clock.time_scale,
                "anchor_epoch_s": self.clock.anchor_epoch_s}

    def flows_clock_env(self) -> str:
        """The value of the flows' GKE_LLM_FLOWS_SIMULATED_CLOCK that makes them keep this clock."""
        return f"{self.clock.time_scale:g}@{self.clock.anchor_epoch_s:.6f}"

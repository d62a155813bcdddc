"""Watch the weight download the way the guide does: the Ray workers' disks filling up.

Serve's status cannot tell a weight download from an engine start (both are the replica's
constructor). The Ray dashboard's Cluster view (`GET /nodes?view=summary` on the head, port
`dashboard`) reports each Ray node's disk; reached through the API server's service proxy, it shows
the download growing, then flattening when the engine starts. Fail-soft: when the dashboard cannot
be read, the waiter simply goes without this signal.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.errors import GkeLlmFlowsError
from tasks.clock import Clock
from tasks.gateways.kube import KubeApi

DASHBOARD_PORT = "dashboard"          # the head container's port name (8265) in the RayService


@dataclass(frozen=True)
class DiskTrend:
    """Disk used on the fullest Ray worker, and whether it still grows (None: no growth seen yet)."""

    used_gb: float
    growing: bool | None


def worker_disk_used_gb(kube: KubeApi, namespace: str, cluster: str) -> float | None:
    """Return the disk used on the cluster's fullest Ray worker (GB; each worker holds the weights it
    loads), or None when it cannot be read."""
    try:
        body = kube.proxy_get_json(namespace, f"{cluster}-head-svc", DASHBOARD_PORT, "/nodes",
                                   query=[("view", "summary")])
    except GkeLlmFlowsError:
        return None
    summary = ((body or {}).get("data") or {}).get("summary") if isinstance(body, dict) else None
    workers = [n for n in summary or [] if not (n.get("raylet") or {}).get("isHeadNode")]
    if not workers:
        return None
    return max(float(((n.get("disk") or {}).get("/") or {}).get("used") or 0) for n in workers) / 1e9


class DiskWatch:
    """Across looks, tell a growing download from a finished one (flat for `flat_after_s`)."""

    def __init__(self, clock: Clock, *, flat_after_s: float = 60.0, min_growth_gb: float = 0.5):
        self.clock, self.flat_after_s, self.min_growth_gb = clock, flat_after_s, min_growth_gb
        self._last_gb: float | None = None
        self._grew_at: float | None = None

    def update(self, used_gb: float | None) -> DiskTrend | None:
        """Record a reading; return the trend (None without a reading)."""
        if used_gb is None:
            return None
        now = self.clock.monotonic()
        if self._last_gb is not None and used_gb > self._last_gb + self.min_growth_gb:
            self._grew_at = now
        if self._last_gb is None or used_gb > self._last_gb + self.min_growth_gb or used_gb < self._last_gb:
            self._last_gb = used_gb
        if self._grew_at is None:
            return DiskTrend(used_gb, None)
        return DiskTrend(used_gb, now - self._grew_at < self.flat_after_s)

"""Watch the weight download the way the guide does: the Ray workers' disks filling up.

Serve's status cannot tell a weight download from an engine start (both are the replica's
constructor). The Ray dashboard's Cluster view (`GET /nodes?view=summary` on the head, port
`dashboard`) reports each Ray node's disk and GPUs; reached through the API server's service proxy,
it shows the download growing, then flattening when the engine starts, and the engine start itself
as GPU memory rising (`gpus[].memoryUsed`, MiB, as Ray's reporter agent lists it). A disk that stays
flat while the GPUs stay idle is a stalled download. Fail-soft: when the dashboard cannot be read (or
reports no GPUs), the waiter simply goes without these signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blocks.errors import GkeLlmFlowsError
from tasks.clock import Clock
from tasks.gateways.kube import KubeApi

DASHBOARD_PORT = "dashboard"          # the head container's port name (8265) in the RayService
# An engine holds its CUDA context (~0.5 GB) and then its share of the weights on every GPU it uses;
# a Ray worker without one holds nothing, so 1 GB on any GPU means the engine has started loading.
GPU_BUSY_GB = 1.0
MIB = 2**20


@dataclass(frozen=True)
class DiskTrend:
    """Disk used on the fullest Ray worker, and whether it still grows (None: no growth seen yet)."""

    used_gb: float
    growing: bool | None


@dataclass(frozen=True)
class WorkerReading:
    """One read of the Ray workers: the fullest disk, and the memory used on the busiest GPU (GB;
    None when the dashboard lists no GPUs, e.g. an older Ray or no NVML in the container)."""

    disk_used_gb: float
    gpu_used_gb: float | None
    gpu_total_gb: float | None = None     # that GPU's memory (GB), to tell the KV cache's share from weights


def read_workers(kube: KubeApi, namespace: str, cluster: str) -> WorkerReading | None:
    """Return the cluster's Ray workers' fullest disk and busiest GPU, or None when unreadable."""
    try:
        body = kube.proxy_get_json(namespace, f"{cluster}-head-svc", DASHBOARD_PORT, "/nodes",
                                   query=[("view", "summary")])
    except GkeLlmFlowsError:
        return None
    return summary_reading(body)


def summary_reading(body: object) -> WorkerReading | None:
    """Read the workers' fullest disk and busiest GPU from a `/nodes?view=summary` body, or None
    when it lists no worker. Pure; odd shapes count as absent readings, never raise."""
    data = body.get("data") if isinstance(body, dict) else None
    summary = data.get("summary") if isinstance(data, dict) else None
    workers = [n for n in summary if isinstance(n, dict) and not _field(n, "raylet", "isHeadNode")] \
        if isinstance(summary, list) else []
    if not workers:
        return None
    disk = max(_number(_field(n, "disk", "/", "used")) for n in workers) / 1e9
    gpus = [g for n in workers if isinstance(n.get("gpus"), list) for g in n["gpus"] if isinstance(g, dict)]
    busiest = max(gpus, key=lambda g: _number(g.get("memoryUsed")), default=None)
    if busiest is None:
        return WorkerReading(disk, None)
    total = _number(busiest.get("memoryTotal")) * MIB / 1e9
    return WorkerReading(disk, _number(busiest.get("memoryUsed")) * MIB / 1e9, total or None)


def _field(obj: object, *path: str) -> object:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


class DiskWatch:
    """Across looks, tell a growing download from a finished one (flat for `flat_after_s`), and time
    how long the disk has been flat while the replica is placed (`flat_s`, for stall detection). The
    waiter keeps a second one on the busiest GPU's memory, which a streamed load fills instead."""

    def __init__(self, clock: Clock, *, flat_after_s: float = 60.0, min_growth_gb: float = 0.5):
        self.clock, self.flat_after_s, self.min_growth_gb = clock, flat_after_s, min_growth_gb
        self._last_gb: float | None = None
        self._grew_at: float | None = None
        self._flat_since: float | None = None
        self.flat_s: float | None = None      # at the last reading: seconds without growth, replica placed
        self.grown_gb: float | None = None    # at the last reading: growth since the lowest reading (this pod)
        self._lowest_gb: float | None = None

    def update(self, used_gb: float | None, *, placed: bool = True) -> DiskTrend | None:
        """Record a reading; return the trend (None without a reading). `placed`: the replica is in its
        constructor (Serve says it is initializing); until then the flat time does not count."""
        if used_gb is None:
            return None
        now = self.clock.monotonic()
        grew = self._last_gb is not None and used_gb > self._last_gb + self.min_growth_gb
        shrank = self._last_gb is not None and used_gb < self._last_gb   # a new pod: the download restarts
        if grew:
            self._grew_at = now
        if grew or shrank or not placed or self._flat_since is None:
            self._flat_since = now
        self.flat_s = now - self._flat_since
        self._lowest_gb = used_gb if self._lowest_gb is None or shrank else min(self._lowest_gb, used_gb)
        self.grown_gb = used_gb - self._lowest_gb
        if self._last_gb is None or grew or shrank:
            self._last_gb = used_gb
        if self._grew_at is None:
            return DiskTrend(used_gb, None)
        return DiskTrend(used_gb, now - self._grew_at < self.flat_after_s)


def stall_message(*, disk_gb: float, grown_gb: float | None, flat_s: float, limit_s: float, deployment: str,
                  source: str | None) -> str:
    """Say that the weight download stalled, where it stands, and what to check."""
    what = f"model_source {source!r}" if source else "the model's weights"
    grown = "" if grown_gb is None else f"; {grown_gb:.0f} GB of it written while the wait watched"
    return (f"weight download of {what} stalled at {disk_gb:.0f} GB used on the fullest Ray worker's disk "
            f"(image included{grown}): no growth for {flat_s:.0f}s (timeouts.download_stall_s {limit_s:.0f}s) while "
            f"the workers' GPUs stay idle and {deployment} is still initializing; check the Hugging Face "
            "token (Secret serving.hf_token_secret_name) and Hugging Face rate limits, the bucket's read "
            "permission for the GPU nodes' service account if model_source is gs://, and the GPU nodes' "
            "egress to huggingface.co / storage.googleapis.com (Cloud NAT, firewall rules)")


def stream_stall_message(*, gpu_gb: float, kv_gb: float, flat_s: float, limit_s: float, deployment: str,
                         source: str | None) -> str:
    """Say that the weight stream into GPU memory stalled, where it stands, and what to check."""
    what = f"model_source {source!r}" if source else "the model's weights"
    return (f"weight stream of {what} into GPU memory stalled at {gpu_gb:.1f} GB on the busiest GPU (below the "
            f"{kv_gb:.0f} GB vLLM takes once the weights are in): no growth for {flat_s:.0f}s "
            f"(timeouts.download_stall_s {limit_s:.0f}s) while {deployment} is still initializing; check the "
            "bucket's read permission for the GPU nodes' service account, the GPU nodes' egress to "
            "storage.googleapis.com, and that the image's vLLM streams from gs:// (vllm >= 0.11.1 with "
            "runai-model-streamer; or turn serving.stream_weights off)")

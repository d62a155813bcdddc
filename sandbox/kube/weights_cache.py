"""Model weights on a node's Local SSD: what a weights-prefetch pod copies into a hostPath directory,
and what a Ray worker whose Hugging Face cache is the same directory finds there.

A container whose env has `PREFETCH_SOURCE` (a Hugging Face repo id or `gs://bucket/prefix/<repo>`) is
the weights prefetch (the flows' DaemonSet, one pod per GPU node, no GPU requested, so it runs while
GKE installs the GPU driver). When it starts it "downloads" `rayserve.model_size_gb(source)` at the
profile's `weight_download_mb_per_s` (Hugging Face) or `gcs_download_mb_per_s` (gs://), the rates the
Ray worker's own download uses, into a per-cluster cache keyed by (node uid, host directory, source).
The host directory is the hostPath volume (plus any sub-directory) behind the container's
`HF_HOME` (else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`: /root for runAsUser 0,
/home/ray for the Ray images' user); a container whose cache is no hostPath gets a directory of its
own that nothing else shares. The pod is Ready once the copy is complete and keeps running. A copy
stopped early (pod deleted or crashed) keeps its bytes and a new run resumes from there
(huggingface_hub resumes `.incomplete` files). The node's uid is part of the key, so a node deleted
takes its cache with it and a later node of the same name starts empty.

Faults, as for the Ray worker's download (`rayserve.py`), matched on `PREFETCH_MODEL_ID` (else the
source): `slow_download {factor}` slows the copy, `stalled_download {at_fraction}` stops it for good
at that share of the weights. An unknown model (size None) makes the container exit 1 (Hugging
Face's 404), see `programs.crash_plan`.

A Ray worker whose cache is such a directory (`NodeDownload`) and whose source is a Hugging Face repo
(gs:// mirrors are always fetched in full, see `node_download`) downloads only what is missing when it
starts; while a copy runs there, the two share files and NIC: the worker's download on that node ends
when the copy ends, never later than its own download of the missing bytes would. When the worker's
download completes, the directory holds the whole model.
"""

from __future__ import annotations

import math
import posixpath
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.kube.context import ClusterContext, PerCluster
from sandbox.kube.controllers.base import NODES, take_fault
from sandbox.kube.rayserve import model_size_gb

INF = math.inf
SOURCE_ENV, MODEL_ID_ENV = "PREFETCH_SOURCE", "PREFETCH_MODEL_ID"
CacheKey = tuple[str, str, str]        # (node uid, host directory, source)


def download_bytes_per_s(profile: dict[str, Any], source: str) -> float:
    """Per-node download rate of `source`: the bucket's for gs://, the Hugging Face CDN's otherwise."""
    kube = profile.get("kube", {})
    rate = kube.get("gcs_download_mb_per_s", 2000) if source.startswith("gs://") \
        else kube.get("weight_download_mb_per_s", 600)
    return float(rate) * 1e6


def normalized(source: str) -> str:
    return source.rstrip("/")


@dataclass
class Fill:
    """The copy of one model into one node directory (bytes on the simulated clock's axis)."""

    size: float
    done: float = 0.0                   # bytes present at `since`
    since: float = 0.0
    rate: float = 0.0                   # bytes/s of the current run
    limit: float = 0.0                  # where the current run stops (the size, or a stall point)
    runner: str | None = None           # uid of the pod copying now
    completed_at: float | None = None

    def bytes_at(self, now: float) -> float:
        if self.runner is None:
            return self.done
        return min(self.limit, self.done + max(0.0, now - self.since) * self.rate)

    def ends_at(self) -> float:
        """When the copy is (or will be) complete; INF when no run will complete it."""
        if self.completed_at is not None:
            return self.completed_at
        if self.runner is not None and self.limit >= self.size and self.rate > 0:
            return self.since + (self.size - self.done) / self.rate
        return INF

    def checkpoint(self, now: float) -> None:
        ends = self.ends_at()
        self.done, self.since = self.bytes_at(now), now
        if self.done >= self.size and self.completed_at is None:
            self.completed_at = min(ends, now)


class NodeCaches:
    """The weight copies of one simulated cluster."""

    def __init__(self, ctx: ClusterContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._fills: dict[CacheKey, Fill] = {}

    def get(self, key: CacheKey | None) -> Fill | None:
        with self._lock:
            return self._fills.get(key) if key else None

    def start(self, pod: dict[str, Any], now: float) -> None:
        """The prefetch container of `pod` started: copy (or resume) into its node's directory."""
        container = prefetch_container(pod)
        key = pod_cache_key(self.ctx, pod, container, source_of(container)) if container else None
        size_gb = model_size_gb(key[2], self.ctx.profile) if key else None
        if key is None or size_gb is None:
            return
        rate = download_bytes_per_s(self.ctx.profile, key[2])
        model_id = env_of(container).get(MODEL_ID_ENV) or key[2]
        if slow := take_fault(self.ctx.faults, "slow_download", key="model_id", value=model_id):
            rate /= max(float(slow.get("factor", 3)), 1e-9)
        stall = take_fault(self.ctx.faults, "stalled_download", key="model_id", value=model_id)
        from sandbox.kube.rayserve_status import stall_fraction  # noqa: PLC0415 - it imports this module
        self._prune()
        with self._lock:
            fill = self._fills.setdefault(key, Fill(size=size_gb * 1e9))
            fill.checkpoint(now)
            limit = fill.size if stall is None else stall_fraction(stall) * fill.size
            fill.runner, fill.rate, fill.limit = pod["metadata"]["uid"], rate, max(limit, fill.done)

    def stop(self, pod_uid: str, now: float) -> None:
        """The pod `pod_uid` stopped copying: its bytes stay on the node."""
        with self._lock:
            for fill in self._fills.values():
                if fill.runner == pod_uid:
                    fill.checkpoint(now)
                    fill.runner = None

    def complete(self, key: CacheKey, size: float, now: float) -> None:
        """A Ray worker finished downloading the whole model into the directory of `key`."""
        with self._lock:
            fill = self._fills.setdefault(key, Fill(size=size))
            if fill.completed_at is None:
                fill.checkpoint(now)
                fill.done, fill.since, fill.completed_at = fill.size, now, now

    def next_change_in(self, now: float) -> float | None:
        with self._lock:
            ends = [f.ends_at() - now for f in self._fills.values() if f.runner and f.completed_at is None]
        ends = [e for e in ends if e != INF]
        return max(0.0, min(ends)) if ends else None

    def _prune(self) -> None:
        """Forget the copies of nodes that are gone (their Local SSD went with them)."""
        live = {n["metadata"].get("uid") for n in self.ctx.store.list(NODES)[0]}
        with self._lock:
            for key in [k for k in self._fills if k[0] not in live]:
                del self._fills[key]


@dataclass
class NodeDownload:
    """A Ray worker's share of a replica's weight download (its node's cache, if any)."""

    pod_uid: str
    key: CacheKey | None        # the directory its HF cache is, with the replica's source
    cached: float               # bytes already there when the replica started
    own_s: float                # its own download of the missing bytes (INF: stalled)

    def ends_at(self, caches: NodeCaches, started: float) -> float:
        """When this worker's download ends: its own end, or the copy's if sooner. Never while either
        is stalled (a hung download keeps its file's lock, and the other waits on it: huggingface_hub's
        FileLock has no timeout); a copy that stopped early leaves the rest to the worker."""
        own = started + self.own_s
        fill = caches.get(self.key)
        if fill is None or own == INF:
            return own
        if fill.runner is not None and fill.limit < fill.size:
            return INF
        return max(started, min(own, fill.ends_at()))


def node_download(caches: NodeCaches, worker: dict[str, Any], source: str, size: float, full_s: float,
                  now: float) -> NodeDownload:
    """The download a replica's worker (a `running_workers` entry) makes, given its node's cache.

    Only Hugging Face sources use the cache: Ray Serve LLM's cloud downloader fetches every file of a
    gs:// mirror whether it is on disk or not (as blocks/render_prefetch.py reads ray.llm's
    `CloudFileSystem.download_files`), so a gs:// worker downloads in full and leaves no record."""
    key = None if source.startswith("gs://") else cache_key(worker.get("cache"), source)
    fill = caches.get(key)
    cached = min(size, fill.bytes_at(now)) if fill is not None else 0.0
    own = full_s * (1 - cached / size) if size > 0 else 0.0
    return NodeDownload(pod_uid=worker["uid"], key=key, cached=cached, own_s=own)


# -- reading pods ---------------------------------------------------------------------------------
def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}


def prefetch_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's weights-prefetch container (the one with `PREFETCH_SOURCE`), if any."""
    return next((c for c in (pod.get("spec") or {}).get("containers") or [] if env_of(c).get(SOURCE_ENV)), None)


def source_of(container: dict[str, Any]) -> str:
    return normalized(env_of(container).get(SOURCE_ENV, ""))


def hf_home(pod: dict[str, Any], container: dict[str, Any]) -> str:
    env = env_of(container)
    if env.get("HF_HOME"):
        return env["HF_HOME"]
    if env.get("XDG_CACHE_HOME"):
        return posixpath.join(env["XDG_CACHE_HOME"], "huggingface")
    user = ((container.get("securityContext") or {}).get("runAsUser")
            if "runAsUser" in (container.get("securityContext") or {})
            else ((pod.get("spec") or {}).get("securityContext") or {}).get("runAsUser"))
    return "/root/.cache/huggingface" if user == 0 else "/home/ray/.cache/huggingface"


def host_dir(pod: dict[str, Any], container: dict[str, Any]) -> str | None:
    """The node directory behind the container's Hugging Face cache, when a hostPath volume backs it."""
    home = posixpath.normpath(hf_home(pod, container))
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    best: tuple[int, str] | None = None
    for mount in container.get("volumeMounts") or []:
        path = posixpath.normpath(mount.get("mountPath", "/"))
        if home != path and not home.startswith(path.rstrip("/") + "/"):
            continue
        host = (volumes.get(mount.get("name")) or {}).get("hostPath")
        if host is None or mount.get("subPath"):
            candidate = None
        else:
            candidate = posixpath.normpath(posixpath.join(host.get("path", "/"), posixpath.relpath(home, path)))
        if best is None or len(path) > best[0]:
            best = (len(path), candidate or "")
    return best[1] if best and best[1] else None


def node_uid(ctx: ClusterContext, pod: dict[str, Any]) -> str | None:
    node = ctx.store.get(NODES, None, (pod.get("spec") or {}).get("nodeName") or "")
    return node["metadata"].get("uid") if node else None


def cache_base(ctx: ClusterContext, pod: dict[str, Any], container: dict[str, Any]) -> tuple[str, str] | None:
    """(node uid, host directory) of the container's HF cache; a private directory when no hostPath."""
    uid = node_uid(ctx, pod)
    if uid is None:
        return None
    return uid, host_dir(pod, container) or f"pod:{pod['metadata'].get('uid', '')}"


def cache_key(base: tuple[str, str] | None, source: str) -> CacheKey | None:
    """The key of `source` in the directory `base` (`cache_base`); None without a directory."""
    return (base[0], base[1], normalized(source)) if base else None


def pod_cache_key(ctx: ClusterContext, pod: dict[str, Any], container: dict[str, Any], source: str) -> CacheKey | None:
    return cache_key(cache_base(ctx, pod, container), source)


# -- per cluster ----------------------------------------------------------------------------------
_caches: PerCluster[NodeCaches] = PerCluster(lambda ctx: NodeCaches(ctx))


def node_caches(ctx: ClusterContext) -> NodeCaches:
    """The weight copies of one simulated cluster (created on first use)."""
    return _caches.get(ctx)


def forget_caches(ctx: ClusterContext) -> None:
    """Drop the cluster's node caches (its controllers stopped, or a test resets the scenario)."""
    _caches.forget(ctx)

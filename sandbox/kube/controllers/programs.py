"""What the simulated containers do once started: the programs behind the images we know.

The kubelet asks here how long an image takes to pull, when init containers finish, when a
container is Ready, and whether it will crash. Four programs are known:
- the KubeRay operator (`quay.io/kuberay/operator`): Ready after its readiness probe's initial delay;
  exits 1 after the informer cache-sync timeout when a RayCluster/RayJob/RayService CRD is missing
  (kuberay#538, #1552) or shortly after start under fault `operator_crashloop`;
- a Ray head (`ray.io/node-type=head`): starts GCS, the dashboard (port 8265, where Ray Serve's REST
  API lives) and, once Serve runs, the proxy on 8000;
- a Ray worker: init container `wait-gcs-ready` waits for the head; Ready only when a Serve proxy
  runs on it (a RayService worker's readiness probe checks `:8000/-/healthz`), so with PP across two
  nodes one worker stays unready forever, as upstream (kuberay#2552);
- the weights prefetch (a container with env `PREFETCH_SOURCE`, see `weights_cache.py`): copies the
  model into its node's hostPath cache from its start, Ready once the copy is complete, running on
  afterwards; an unknown model exits 1 after `crash_after_s` (Hugging Face's 404).
Any other container is Ready after its readiness probe's `initialDelaySeconds`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.kube import rayserve, weights_cache
from sandbox.kube.context import ClusterContext
from sandbox.kube.controllers.base import PODS, take_fault
from sandbox.kube.controllers.events import forget_events
from sandbox.kube.controllers.operator import is_operator_pod, missing_crds

UNREADY_WORKER_MESSAGE = ("Readiness probe failed: success\nwget: can't connect to remote host (127.0.0.1): "
                          "Connection refused")


def attach(ctx: ClusterContext, kick: Callable[[], None]) -> None:
    rayserve.serve_registry(ctx).add_listener(kick)


def detach(ctx: ClusterContext) -> None:
    """The cluster's kubelets stopped: its Ray processes and recorded events go with it."""
    rayserve.forget_registry(ctx)
    weights_cache.forget_caches(ctx)
    forget_events(ctx)


def images_of(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    images: list[str] = []
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if container.get("image") and container["image"] not in images:
            images.append(container["image"])
    return images or ["registry.k8s.io/pause:3.10"]


def image_bytes(ctx: ClusterContext, image: str) -> int:
    kube = ctx.profile.get("kube", {})
    sizes = {p: s for p, s in (kube.get("image_sizes_gb") or {}).items() if p in image}
    best = max(sizes, key=len, default=None)   # the most specific pattern wins (ray-llm over ray)
    return int(float(sizes[best] if best else kube.get("default_image_size_gb", 0.2)) * 1e9)


def pull_seconds(ctx: ClusterContext, image: str, streaming: bool) -> float:
    """Simulated pull time of `image` on a node with or without GKE Image streaming."""
    kube = ctx.profile.get("kube", {})
    size_gb = image_bytes(ctx, image) / 1e9
    # Image streaming serves Artifact Registry and Docker Hub public images (GKE docs); quay.io is pulled.
    if streaming and not image.startswith(("quay.io/", "ghcr.io/", "registry.k8s.io/")):
        return float(kube.get("image_streaming_start_s", 10))
    return float(kube.get("image_pull_overhead_s", 3)) + size_gb * 1000 / float(kube.get("image_pull_mb_per_s", 60))


def init_pending(ctx: ClusterContext, pod: dict[str, Any], since_images_s: float) -> float | None:
    """None when the init containers are done; else seconds until it is worth looking again."""
    inits = (pod.get("spec") or {}).get("initContainers") or []
    if not inits:
        return None
    step = float(ctx.profile.get("kube", {}).get("init_container_s", 2))
    if since_images_s < step:
        return step - since_images_s
    if any(c.get("name") == "wait-gcs-ready" for c in inits) and not _head_ready(ctx, pod):
        return 30.0  # the script polls GCS every few seconds; a change of the head pod kicks us anyway
    return None


def crash_plan(ctx: ClusterContext, pod: dict[str, Any]) -> tuple[float, str, int] | None:
    """(seconds after start, terminated reason, exit code) if this run of the container will die."""
    kube = ctx.profile.get("kube", {})
    name = pod["metadata"]["name"]
    if is_operator_pod(pod):
        if ctx.faults.take("operator_crashloop") is not None:
            return float(kube.get("operator_crash_after_s", 5)), "Error", 1
        if missing_crds(ctx):
            return float(kube.get("operator_cache_sync_timeout_s", 120)), "Error", 1
        return None
    prefetch = weights_cache.prefetch_container(pod)
    if prefetch is not None and rayserve.model_size_gb(weights_cache.source_of(prefetch), ctx.profile) is None:
        return float(kube.get("crash_after_s", 20)), "Error", 1
    kind = node_type(pod)
    if take_fault(ctx.faults, "crashloop", key="pod_prefix", value=name, applies=lambda f: is_ray_pod(pod),
                  node_type=kind):
        return float(kube.get("crash_after_s", 20)), "Error", 1
    if take_fault(ctx.faults, "oom_killed", key="pod_prefix", value=name, applies=lambda f: _is_ray(pod, "worker"),
                  node_type=kind):
        return float(kube.get("oom_after_s", 240)), "OOMKilled", 137
    return None


def started(ctx: ClusterContext, pod: dict[str, Any], pod_ip: str) -> None:
    if weights_cache.prefetch_container(pod) is not None:
        weights_cache.node_caches(ctx).start(pod, ctx.clock.elapsed_s())
        rayserve.serve_registry(ctx).changed()
    elif _is_ray(pod, "head"):
        rayserve.serve_registry(ctx).head_started(pod, pod_ip)
    elif _is_ray(pod, "worker"):
        rayserve.serve_registry(ctx).changed()


def stopped(ctx: ClusterContext, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    ctx.pod_ports.close(meta.get("namespace"), meta["name"])
    weights_cache.node_caches(ctx).stop(meta.get("uid", ""), ctx.clock.elapsed_s())
    rayserve.serve_registry(ctx).pod_stopped(meta.get("namespace"), meta["name"])


def readiness(ctx: ClusterContext, pod: dict[str, Any], container: dict[str, Any],
              since_start_s: float) -> tuple[bool, float | None]:
    """(ready now, seconds until readiness may change by itself)."""
    probe = container.get("readinessProbe") or {}
    delay = float(probe.get("initialDelaySeconds", 0)) + (float(probe.get("periodSeconds", 10)) if probe else 0.0)
    if _is_ray(pod, "head"):
        delay = max(delay, float(ctx.profile.get("kube", {}).get("ray_head_start_s", 15)))
    if since_start_s < delay:
        return False, delay - since_start_s
    if weights_cache.env_of(container).get(weights_cache.SOURCE_ENV):
        return _prefetch_readiness(ctx, pod, container)
    if _is_ray(pod, "worker") and _in_rayservice(pod):
        meta = pod["metadata"]
        hosts = rayserve.serve_registry(ctx).proxy_pods(meta.get("namespace"), _cluster(pod))
        return meta["name"] in hosts, None
    return True, None


def reports_unready(pod: dict[str, Any]) -> bool:
    """Ray workers of a RayService report failed readiness probes as events (kuberay#2552)."""
    return _is_ray(pod, "worker") and _in_rayservice(pod)


def next_change_in(ctx: ClusterContext) -> float | None:
    waits = [rayserve.serve_registry(ctx).next_change_in(),
             weights_cache.node_caches(ctx).next_change_in(ctx.clock.elapsed_s())]
    return min((w for w in waits if w is not None), default=None)


def _prefetch_readiness(ctx: ClusterContext, pod: dict[str, Any],
                        container: dict[str, Any]) -> tuple[bool, float | None]:
    """Ready once the copy into the node's cache is complete (the probe's `.done` marker exists)."""
    key = weights_cache.pod_cache_key(ctx, pod, container, weights_cache.source_of(container))
    fill = weights_cache.node_caches(ctx).get(key)
    if fill is None:
        return False, None
    now = ctx.clock.elapsed_s()
    if fill.bytes_at(now) >= fill.size:
        return True, None
    ends = fill.ends_at()
    return False, (ends - now if ends != weights_cache.INF else None)


def qos_class(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    if not any((c.get("resources") or {}) for c in containers):
        return "BestEffort"
    for c in containers:
        res = c.get("resources") or {}
        limits = res.get("limits") or {}
        requests = res.get("requests") or limits
        if not limits or any(requests.get(k) != v for k, v in limits.items()) or not {"cpu", "memory"} <= set(limits):
            return "Burstable"
    return "Guaranteed"


def node_type(pod: dict[str, Any]) -> str:
    """`head`, `worker`, or "" for a pod that is no Ray node."""
    return _labels(pod).get("ray.io/node-type", "")


def is_ray_pod(pod: dict[str, Any]) -> bool:
    return "ray.io/node-type" in _labels(pod)


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}


def _is_ray(pod: dict[str, Any], node_type: str) -> bool:
    return _labels(pod).get("ray.io/node-type") == node_type


def _cluster(pod: dict[str, Any]) -> str:
    return _labels(pod).get("ray.io/cluster", "")


def _in_rayservice(pod: dict[str, Any]) -> bool:
    return _labels(pod).get("ray.io/originated-from-crd") == "RayService"


def _head_ready(ctx: ClusterContext, pod: dict[str, Any]) -> bool:
    heads, _ = ctx.store.list(PODS, pod["metadata"].get("namespace"),
                              f"ray.io/cluster={_cluster(pod)},ray.io/node-type=head")
    return any(_pod_ready(h) for h in heads)


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])

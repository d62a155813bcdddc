"""How a Serve application's state evolves: replica placement, weight download, engine start, failure.

Split from `rayserve.py` (which owns the config and the dashboard API); the functions here read the
cluster's Ray worker pods from the store and compute app/deployment statuses as Ray Serve words them.

The replica's weight download is per worker node (`weights_cache.NodeDownload`): a worker whose
Hugging Face cache is a hostPath directory that a weights-prefetch pod fills with the same (Hugging
Face) source downloads only the missing bytes, and while the copy runs its download ends when the copy ends (never
later than its own). The replica's download lasts until the last worker's ends; it is recomputed on
each refresh until it ends, so a copy that finishes, stops or stalls moves it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sandbox.kube import weights_cache
from sandbox.kube.controllers.base import NODES, PODS, take_fault
from sandbox.kube.controllers.resources import GPU, RAY_ACCELERATOR, parse_quantity

if TYPE_CHECKING:
    from sandbox.kube.context import ClusterContext
    from sandbox.kube.rayserve import AppRun, LlmConfig, RayServe

INF = math.inf


def running_workers(ctx: ClusterContext, namespace: str, cluster: str) -> list[dict[str, Any]]:
    """Ray worker pods of `cluster` whose container runs: name, uid, restarts, GPUs, accelerator, and
    `cache`: (node uid, host directory) of its Hugging Face cache (`weights_cache.cache_base`)."""
    pods, _ = ctx.store.list(PODS, namespace, f"ray.io/cluster={cluster},ray.io/node-type=worker")
    workers = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        containers = status.get("containerStatuses") or []
        if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running" or not containers:
            continue
        if "running" not in (containers[0].get("state") or {}):
            continue
        gpus, accel = pod_gpus(ctx, pod)
        workers.append({"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"],
                        "restarts": int(containers[0].get("restartCount", 0)), "gpus": gpus, "accel": accel,
                        "cache": weights_cache.cache_base(ctx, pod, pod["spec"]["containers"][0])})
    return workers


def pod_gpus(ctx: ClusterContext, pod: dict[str, Any]) -> tuple[int, str | None]:
    """The pod's GPU limit and its node's accelerator as Ray names it (`H100`), or None."""
    limits = ((pod["spec"]["containers"][0].get("resources") or {}).get("limits") or {})
    node = ctx.store.get(NODES, None, pod["spec"].get("nodeName", "")) or {"metadata": {}}
    accel = (node["metadata"].get("labels") or {}).get("cloud.google.com/gke-accelerator")
    return int(parse_quantity(limits.get(GPU, "0"))), RAY_ACCELERATOR.get(accel)


def place_replica(serve: RayServe, run: AppRun, workers: list[dict[str, Any]], now: float) -> None:
    """Place, keep, or lose `run`'s LLM replica given the running workers (mutates `run`)."""
    if run.import_error or not run.llms:
        return
    need = sum(llm.gpus for llm in run.llms)
    accel = run.llms[0].accelerator
    chosen, have = [], 0
    for worker in workers:
        if worker["gpus"] and (accel is None or worker["accel"] == accel) and have < need:
            chosen.append(worker)
            have += worker["gpus"]
    key = frozenset((w["uid"], w["name"], w["restarts"]) for w in chosen) if have >= need else frozenset()
    if run.replica_at is not None and key != run.replica_key:
        run.replica_at, run.replica_key, run.lost, run.quick = None, frozenset(), True, False
    if run.replica_at is None and key:
        _start_replica(serve, run, key, chosen, now)
    if run.replica_at is not None:
        _follow_download(serve, run, now)


def _start_replica(serve: RayServe, run: AppRun, key: frozenset, chosen: list[dict[str, Any]], now: float) -> None:
    kube = serve.ctx.profile.get("kube", {})
    llm = run.llms[0]
    run.replica_at, run.replica_key, run.fail_message = now, key, ""
    run.fail_at, run.node_downloads = None, []
    if llm.size_gb is None:
        run.download_s, run.engine_s = 0.0, INF
        run.fail_message = _hf_not_found(llm.source)
        run.fail_at = now + float(kube.get("constructor_failure_s", 45))
        return
    size = llm.size_gb * 1e9
    run.load_s = size / _load_bytes_per_s(kube, llm)
    run.stall_fraction = None
    if llm.streamed:
        _start_stream(serve, run, now)
        return
    cached = (llm.source, frozenset(uid for uid, _, _ in key)) in serve.downloaded
    download = 0.0 if cached else size / weights_cache.download_bytes_per_s(serve.ctx.profile, llm.source)
    if slow := take_fault(serve.ctx.faults, "slow_download", key="model_id", value=llm.model_id):
        download *= float(slow.get("factor", 3))
    run.nominal_download_s = download
    caches = weights_cache.node_caches(serve.ctx)
    run.node_downloads = [weights_cache.node_download(caches, w, llm.source, size, download, now) for w in chosen]
    # Nothing missing on any node (a complete prefetch, or the re-deploy cache): no download to stall.
    if any(d.own_s > 0 for d in run.node_downloads) and (
            stall := take_fault(serve.ctx.faults, "stalled_download", key="model_id", value=llm.model_id)):
        run.stall_fraction = stall_fraction(stall)
        for node in run.node_downloads:
            node.own_s = INF if node.own_s > 0 else 0.0
    run.download_s = _download_s(serve, run)
    run.engine_s = run.load_s + float(kube.get("engine_warmup_s", 180))
    _engine_fault(serve, run)


def _load_bytes_per_s(kube: dict[str, Any], llm: LlmConfig) -> float:
    """Rate of the engine's load into GPU memory: the bucket's streaming rate for a streamed model
    (one pass from GCS), else the read of the downloaded files from the node's disk / page cache."""
    rate = kube.get("gcs_stream_mb_per_s", 2000) if llm.streamed else kube.get("weight_load_mb_per_s", 2500)
    return float(rate) * 1e6


def _start_stream(serve: RayServe, run: AppRun, now: float) -> None:
    """A streamed model: nothing goes to disk (Ray fetches only the config and tokenizer), and the
    download faults act on the stream, which is the engine's load: slower, or stuck part-way."""
    llm, kube = run.llms[0], serve.ctx.profile.get("kube", {})
    run.download_s = run.nominal_download_s = 0.0
    if slow := take_fault(serve.ctx.faults, "slow_download", key="model_id", value=llm.model_id):
        run.load_s *= float(slow.get("factor", 3))
    run.engine_s = run.load_s + float(kube.get("engine_warmup_s", 180))
    if stall := take_fault(serve.ctx.faults, "stalled_download", key="model_id", value=llm.model_id):
        run.stall_fraction, run.engine_s = stall_fraction(stall), INF
    _engine_fault(serve, run)


def _engine_fault(serve: RayServe, run: AppRun) -> None:
    llm = run.llms[0]
    if take_fault(serve.ctx.faults, "deploy_failed", key="model_id", value=llm.model_id):
        run.fail_message = _engine_error(llm.model_id)
        run.fail_at = _gives_up_at(serve, run)


def _download_s(serve: RayServe, run: AppRun) -> float:
    """How long the replica's download lasts: until the last of its workers' downloads ends."""
    caches = weights_cache.node_caches(serve.ctx)
    ends = [node.ends_at(caches, run.replica_at) for node in run.node_downloads]
    return max(ends, default=run.replica_at) - run.replica_at


def _gives_up_at(serve: RayServe, run: AppRun) -> float:
    """When Serve gives up on a replica whose engine fails: after the download, a few constructor tries."""
    return run.replica_at + run.download_s + float(serve.ctx.profile.get("kube", {}).get("constructor_failure_s", 45))


def _follow_download(serve: RayServe, run: AppRun, now: float) -> None:
    """Move the download's end with the node caches until it ends; then record the weights as present
    (the re-deploy cache, and each worker's hostPath cache directory)."""
    llm = run.llms[0]
    present = (llm.source, frozenset(uid for uid, _, _ in run.replica_key))
    if present in serve.downloaded or llm.streamed:     # a stream leaves nothing on disk to reuse
        return
    if run.node_downloads:
        run.download_s = _download_s(serve, run)
        if run.fail_message and llm.size_gb is not None:
            run.fail_at = _gives_up_at(serve, run)
    if now < run.replica_at + run.download_s:
        return
    serve.downloaded.add(present)
    caches = weights_cache.node_caches(serve.ctx)
    shared = [node.key for node in run.node_downloads if node.key is not None]
    for key in shared:
        caches.complete(key, (llm.size_gb or 0) * 1e9, run.replica_at + run.download_s)
    if shared:
        from sandbox.kube.rayserve import serve_registry
        serve_registry(serve.ctx).changed()     # a prefetch pod there may be Ready now


def app_status(serve: RayServe, run: AppRun, now: float) -> dict[str, Any]:
    """One entry of `applications` in Serve's REST status."""
    kube = serve.ctx.profile.get("kube", {})
    base = {"name": run.name, "route_prefix": run.config.get("route_prefix", "/"), "docs_path": None,
            "last_deployed_time_s": serve.ctx.clock.now() - (serve.ctx.clock.elapsed_s() - run.deployed_at),
            "deployed_app_config": run.config, "source": "declarative"}
    if run.import_error:
        return {**base, "status": "DEPLOY_FAILED", "deployments": {},
                "message": f"Deploying app '{run.name}' failed with exception:\n{run.import_error}"}
    built_at = run.deployed_at + float(kube.get("serve_app_build_s", 15))
    if now < built_at:
        return {**base, "status": "DEPLOYING", "message": "", "deployments": {}}
    model_id = run.llms[0].model_id if run.llms else "default"
    from sandbox.kube.rayserve import deployment_names
    server, ingress = deployment_names(serve.ray_version, model_id)
    ingress_ok = now >= built_at + float(kube.get("ingress_start_s", 20))
    server_state, server_msg = _server_state(serve, run, server, now, built_at)
    deployments = {server: _deployment(server, server_state, server_msg),
                   ingress: _deployment(ingress, "HEALTHY" if ingress_ok else "UPDATING", "")}
    if server_state == "DEPLOY_FAILED":
        state, message = "DEPLOY_FAILED", f"Failed to update the deployments ['{server}']."
    elif server_state == "HEALTHY" and ingress_ok:
        state, message = "RUNNING", ""
        run.ever_running = True
    elif run.ever_running and server_state == "UNHEALTHY":
        state, message = "UNHEALTHY", f"The deployments ['{server}'] are UNHEALTHY."
    else:
        state, message = "DEPLOYING", ""
    return {**base, "status": state, "message": message, "deployments": deployments}


def _server_state(serve: RayServe, run: AppRun, server: str, now: float, built_at: float) -> tuple[str, str]:
    kube = serve.ctx.profile.get("kube", {})
    where = f"Deployment '{server}' in application '{run.name}'"
    if run.fail_at is not None and now >= run.fail_at:
        return "DEPLOY_FAILED", ("The deployment failed to start 3 times in a row. This may be due to a problem "
                                 "with its constructor or initial health check failing. See controller logs for "
                                 f"details. Error:\n{run.fail_message}")
    if run.replica_at is None:
        if run.ever_running and run.lost:
            return "UNHEALTHY", (f"{where} has 0 healthy replicas: a replica's Ray node died (its worker pod "
                                 "went away) and no replacement could be scheduled yet.")
        if now - built_at >= SLOW_S:
            return "UPDATING", (f"{where} has 1 replicas that have taken more than 30s to be scheduled. This may "
                                "be due to waiting for the cluster to auto-scale or for a runtime environment to be "
                                f"installed. Resources required for each replica: {_required(run)}, total resources "
                                f"available: {_available(serve)}. Use `ray status` for more details.")
        return "UPDATING", ""
    if run.quick:
        done = now >= run.deployed_at + float(kube.get("serve_update_s", 10))
        return ("HEALTHY", "") if done else ("UPDATING", "")
    if now < run.replica_at + run.download_s + run.engine_s:
        state = "UNHEALTHY" if run.ever_running else "UPDATING"
        if now - run.replica_at >= SLOW_S:
            return state, (f"{where} has 1 replicas that have taken more than 30s to initialize.\nThis may be "
                           "caused by a slow __init__ or reconfigure method.")
        return state, ""
    return "HEALTHY", ""


SLOW_S = 30.0


def due_times(serve: RayServe, run: AppRun) -> list[float]:
    """Moments at which `run`'s status changes by itself."""
    kube = serve.ctx.profile.get("kube", {})
    built = run.deployed_at + float(kube.get("serve_app_build_s", 15))
    times = [built, built + float(kube.get("ingress_start_s", 20)), built + SLOW_S,
             run.deployed_at + float(kube.get("serve_update_s", 10))]
    if run.replica_at is not None:
        times += [run.replica_at + SLOW_S, run.replica_at + run.download_s,
                  run.replica_at + run.download_s + run.engine_s]
    if run.fail_at is not None:
        times.append(run.fail_at)
    return [t for t in times if t != INF and not math.isnan(t)]


def stall_fraction(fault: dict[str, Any]) -> float:
    """The share of the weights a `stalled_download` fault lets through (`at_fraction`, default 0.4),
    clamped to [0, 1]; a value that is not a number counts as the default."""
    try:
        fraction = float(fault.get("at_fraction", DEFAULT_STALL_FRACTION))
    except (TypeError, ValueError):
        fraction = DEFAULT_STALL_FRACTION
    return min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else DEFAULT_STALL_FRACTION


DEFAULT_STALL_FRACTION = 0.4


def _deployment(name: str, status: str, message: str) -> dict[str, Any]:
    return {"name": name, "status": status, "status_trigger": "CONFIG_UPDATE_STARTED" if status == "UPDATING"
            else "CONFIG_UPDATE_COMPLETED", "message": message, "replicas": []}


def _required(run: AppRun) -> str:
    llm = run.llms[0]
    accel = f', "accelerator_type:{llm.accelerator}": 0.001' if llm.accelerator else ""
    return f'{{"CPU": 1.0, "GPU": {float(llm.gpus)}{accel}}}'


def _available(serve: RayServe) -> str:
    workers = running_workers(serve.ctx, serve.namespace, serve.cluster)
    gpus = sum(w["gpus"] for w in workers)
    return f'{{"CPU": {2.0 + 24.0 * len(workers)}, "GPU": {float(gpus)}}}'


def _hf_not_found(source: str) -> str:
    return ("Traceback (most recent call last):\n  File \"/home/ray/anaconda3/lib/python3.11/site-packages/"
            "huggingface_hub/utils/_http.py\", line 409, in hf_raise_for_status\n    response.raise_for_status()\n"
            "requests.exceptions.HTTPError: 404 Client Error: Not Found for url: "
            f"https://huggingface.co/api/models/{source}/revision/main\n\nThe above exception was the direct cause "
            "of the following exception:\n\nhuggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. "
            f"Repository Not Found for url: https://huggingface.co/api/models/{source}/revision/main.\nPlease make "
            "sure you specified the correct `repo_id` and `repo_type`.")


def _engine_error(model_id: str) -> str:
    return ("Traceback (most recent call last):\n  File \"/home/ray/anaconda3/lib/python3.11/site-packages/ray/llm/"
            "_internal/serve/deployments/llm/vllm/vllm_engine.py\", line 412, in start\n    self.engine = await "
            "self._start_engine()\n  File \".../vllm/v1/engine/core.py\", line 83, in __init__\n    "
            "self.model_executor = executor_class(vllm_config)\nRuntimeError: Engine core initialization failed. "
            f"See root cause above. Failed core proc(s): {{}} (model_id={model_id!r})")


def node_summary(serve: RayServe) -> list[dict[str, Any]]:
    """Ray nodes as the dashboard's `/nodes?view=summary` lists them (trimmed): the disk of a worker
    grows with the weight download of the replica placed on it, and its GPUs' memory with the engine."""
    kube = serve.ctx.profile.get("kube", {})
    now = serve.ctx.clock.elapsed_s()
    pods, _ = serve.ctx.store.list(PODS, serve.namespace, f"ray.io/cluster={serve.cluster}")
    nodes = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
            continue
        uid = pod["metadata"]["uid"]
        head = (pod["metadata"].get("labels") or {}).get("ray.io/node-type") == "head"
        total = float(kube.get("ray_head_disk_gb" if head else "ray_worker_disk_gb", 100 if head else 6000)) * 1e9
        used = float(kube.get("image_sizes_gb", {}).get("rayproject/ray-llm", 10.5)) * 1e9
        used += 0 if head else _downloaded_bytes(serve, pod, now)
        nodes.append({"hostname": pod["metadata"]["name"], "ip": status.get("podIP", ""),
                      "raylet": {"nodeId": uid.replace("-", "")[:28], "state": "ALIVE",
                                 "isHeadNode": head, "nodeManagerAddress": status.get("podIP", "")},
                      "disk": {"/": {"total": int(total), "used": int(used), "free": int(total - used),
                                     "percent": round(100 * used / total, 1)}},
                      "gpus": _gpus(serve, pod, now)})
    return nodes


def _downloaded_bytes(serve: RayServe, pod: dict[str, Any], now: float) -> float:
    """Weights on the worker's disk: the replica's download progress, or what its node's cache
    directory holds of the model if that is more (a prefetch copy under way or done)."""
    uid = pod["metadata"]["uid"]
    caches = weights_cache.node_caches(serve.ctx)
    run = _run_on(serve, uid)
    if run is None:   # no replica here yet: what the cache holds of the models Serve was asked for
        container = pod["spec"]["containers"][0]
        fills = [caches.get(weights_cache.pod_cache_key(serve.ctx, pod, container, llm.source))
                 for app in serve.apps.values() for llm in app.llms]
        return max((f.bytes_at(now) for f in fills if f is not None), default=0.0)
    size = (run.llms[0].size_gb or 0) * 1e9
    if run.llms[0].streamed:
        return 0.0
    if (run.llms[0].source, frozenset(u for u, _, _ in run.replica_key)) in serve.downloaded:
        return size
    node = next((d for d in run.node_downloads if d.pod_uid == uid), None)
    cached = node.cached if node is not None else 0.0
    fill = caches.get(node.key) if node is not None else None
    cap = size if run.stall_fraction is None else max(cached, run.stall_fraction * size)
    if fill is not None and fill.runner is not None and fill.limit < fill.size:
        cap = min(cap, max(cached, fill.limit))      # blocked behind the stalled copy's lock
    own = size if run.nominal_download_s <= 0 else cached + size * (now - run.replica_at) / run.nominal_download_s
    return max(min(cap, own), fill.bytes_at(now) if fill is not None else 0.0)


def _run_on(serve: RayServe, uid: str) -> AppRun | None:
    """The LLM app whose replica runs on the Ray node with pod `uid`, if any."""
    for run in serve.apps.values():
        if run.replica_at is not None and run.llms and any(u == uid for u, _, _ in run.replica_key):
            return run
    return None


# nvidia-smi's name and total memory (MiB) of each accelerator, keyed by Ray's accelerator name.
GPU_MODELS = {"H100": ("NVIDIA H100 80GB HBM3", 81559), "H200": ("NVIDIA H200", 143771),
              "A100-80G": ("NVIDIA A100-SXM4-80GB", 81920), "A100-40G": ("NVIDIA A100-SXM4-40GB", 40960),
              "L4": ("NVIDIA L4", 23034), "T4": ("Tesla T4", 15360), "V100": ("Tesla V100-SXM2-16GB", 16384)}
CUDA_CONTEXT_MIB = 600          # what an engine process holds on each GPU before any weights


def _gpus(serve: RayServe, pod: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The pod's GPUs as Ray's reporter agent lists them (memory in MiB)."""
    count, accel = pod_gpus(serve.ctx, pod)
    name, total = GPU_MODELS.get(accel or "", ("NVIDIA GPU", 81559))
    used, busy = _gpu_memory_mib(_run_on(serve, pod["metadata"]["uid"]), now, total)
    uid = pod["metadata"]["uid"]
    return [{"index": i, "name": name, "uuid": f"GPU-{uid[:8]}-{uid[9:13]}-{i:04x}-{uid[-12:]}",
             "utilizationGpu": busy, "memoryUsed": int(used), "memoryTotal": total} for i in range(count)]


def _gpu_memory_mib(run: AppRun | None, now: float, total: float) -> tuple[float, int]:
    """(memory used per GPU, utilization %) of a GPU under `run`'s replica: nothing until the download
    ends, then the CUDA context plus the weights loading in (a stalled stream stops part-way), then
    vLLM's share (KV cache) from the warm-up on; nothing again once the engine failed."""
    if run is None or (run.fail_at is not None and now >= run.fail_at):
        return 0.0, 0
    llm = run.llms[0]
    weights = (llm.size_gb or 0) * 1e9 / max(1, llm.gpus) / 2**20
    if run.quick:
        return max(CUDA_CONTEXT_MIB + weights, llm.gpu_memory_utilization * total), 0
    loading_at = run.replica_at + run.download_s
    if now < loading_at:
        return 0.0, 0
    load_s = run.load_s
    stuck_at = 1.0 if run.stall_fraction is None else run.stall_fraction   # a stalled stream stops there
    if load_s > 0 and now < loading_at + load_s or stuck_at < 1.0:
        loaded = min((now - loading_at) / load_s if load_s > 0 else 1.0, stuck_at)
        return min(total, CUDA_CONTEXT_MIB + weights * loaded), 10
    warm = now < run.replica_at + run.download_s + run.engine_s
    return min(total, max(CUDA_CONTEXT_MIB + weights, llm.gpu_memory_utilization * total)), 95 if warm else 0

"""Classify a RayService and its pods and events: READY, PROGRESSING or FATAL, and the load phase.

Pure: no I/O, no clock. The waiter (`ray_service_wait.py`) feeds it live objects and owns time.
Readiness is what `reference/kuberay.md` section 0 calls serving: condition `Ready`=True, at least
one serve endpoint, `observedGeneration == metadata.generation`, at least one app and every app in
`activeServiceStatus` RUNNING with all of its deployments HEALTHY (any names), and no pending
cluster (a blue/green upgrade is not finished while one exists).

Some signs are fatal only if they persist (pods unschedulable with no GPU capacity coming, pods
evicted again and again): those come back as PROGRESSING with a `suspect` message, and the waiter
turns them FATAL once they outlast its grace period. A stalled weight download (the Ray workers'
disk flat for `download_stall_s` while their GPUs stay idle and Serve still initializes the replica)
is FATAL here, timed by the waiter's `DiskWatch`; so is a stalled stream (a `gs://` copy that vLLM
streams into GPU memory: the busiest GPU flat for as long, below vLLM's KV-cache share).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from tasks.kube_objects import (
    Obj,
    condition,
    container_statuses,
    event_message,
    event_object,
    gpu_allocatable,
    gpu_nodes,
    has_gpu_room,
    is_node_ready,
    is_pulling,
    is_unscheduled,
    labels_of,
    name_of,
    ns_name,
    short,
)
from tasks.ray_service_download import GPU_BUSY_GB, DiskTrend, stall_message, stream_stall_message
from tasks.waiting import Look, State

# Container waiting reasons that never heal by waiting (a human must change the spec or image).
FATAL_WAITING_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
FATAL_TERMINATED_REASONS = frozenset({"OOMKilled"})
FATAL_READY_REASONS = frozenset({"ValidationFailed", "InitializingTimeout"})
UNRECONCILED_GRACE_S = 300.0
DISK_STEP_GB = 50                        # report the download in steps (one log line per step)
SCHEDULING_WORDS = "to be scheduled"     # Serve: "replicas that have taken more than 30s to be scheduled"
INIT_WORDS = "to initialize"             # Serve: "replicas that have taken more than 30s to initialize"
ENGINE_WORDS = ("engine", "safetensors", "cuda graph", "compil", "warm")


class Phase(str, Enum):
    """Where a first model load is, in the order it happens."""

    GPU_NODES = "gpu-nodes"
    IMAGE_PULL = "image-pull"
    WEIGHT_DOWNLOAD = "weight-download"
    ENGINE_START = "engine-start"
    SERVE_RUNNING = "serve-running"


@dataclass(frozen=True)
class Observation:
    """The live objects one look is made of (plain JSON dicts as the API server sends them)."""

    ray_service: Obj | None
    pods: list[Obj] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    gpu_capacity_coming: bool = False    # the caller knows GPU nodes are being created (node pool op)
    disk: DiskTrend | None = None         # the Ray workers' disks (the weight download), when known
    gpu_used_gb: float | None = None      # memory used on the workers' busiest GPU, when known
    disk_flat_s: float | None = None      # how long the disk has not grown while the replica initializes
    disk_grown_gb: float | None = None    # how much the disk grew while watched (the download so far)
    download_stall_s: float | None = None  # flat that long with idle GPUs: a stalled download (None: off)
    gpu_flat_s: float | None = None       # how long the busiest GPU's memory has not grown while initializing
    gpu_total_gb: float | None = None     # that GPU's memory, when known
    gpu_room: dict[str, int] | None = None  # free GPUs by ready GPU node, read while a pod waits for one


@dataclass(frozen=True)
class Classified:
    look: Look
    phase: Phase
    suspect: str | None = None          # a sign that becomes fatal if it persists
    suspect_min_grace_s: float = 0.0    # the least time the waiter gives this suspect before failing


def classify_ray_service(obs: Observation) -> Classified:
    """Classify one observation of a RayService. Pure; never raises on odd or partial status."""
    rs = obs.ray_service
    if rs is None:
        return Classified(Look(State.FATAL, "RayService does not exist (deleted while waiting?)"),
                          Phase.GPU_NODES)
    name = name_of(rs)
    if fatal := _fatal_ready_condition(rs):
        return Classified(Look(State.FATAL, f"RayService {name}: {fatal}"), Phase.GPU_NODES)
    if ready := readiness_summary(rs):
        return Classified(Look(State.READY, ready), Phase.SERVE_RUNNING)
    pods = pods_of(rs, obs.pods)
    for check in (_fatal_app_status, lambda r: fatal_pod_sign(pods), _fatal_cluster_condition):
        if fatal := check(rs):
            return Classified(Look(State.FATAL, fatal), _phase(rs, pods, obs))
    return _progress(rs, pods, obs)


def readiness_summary(rs: Obj) -> str | None:
    """Return a one-line summary when the RayService is serving as kuberay.md section 0 defines, else None."""
    status, meta = rs.get("status") or {}, rs.get("metadata") or {}
    ready = condition(status.get("conditions"), "Ready")
    if not ready or ready.get("status") != "True":
        return None
    if (status.get("numServeEndpoints") or 0) <= 0:
        return None
    if status.get("observedGeneration") != meta.get("generation"):
        return None
    if (status.get("pendingServiceStatus") or {}).get("rayClusterName"):
        return None
    active = status.get("activeServiceStatus") or {}
    apps = active.get("applicationStatuses") or {}
    if not apps or not all(_app_healthy(app) for app in apps.values()):
        return None
    return (f"serving: {status['numServeEndpoints']} endpoint(s), cluster {active.get('rayClusterName')}, "
            f"apps {_apps_text(apps)}")


def cluster_names(rs: Obj) -> list[str]:
    """Return the RayCluster names the RayService status points at (active first)."""
    status = rs.get("status") or {}
    names = [(status.get(key) or {}).get("rayClusterName") for key in ("activeServiceStatus",
                                                                        "pendingServiceStatus")]
    return [n for n in names if n]


def pods_of(rs: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """Return the pods of the RayService's clusters (label `ray.io/cluster`), head first."""
    clusters = set(cluster_names(rs))
    mine = [p for p in pods if labels_of(p).get("ray.io/cluster") in clusters]
    return sorted(mine, key=lambda p: (labels_of(p).get("ray.io/node-type") != "head", name_of(p)))


# -- fatal signs --------------------------------------------------------------------------------

def _fatal_ready_condition(rs: Obj) -> str | None:
    ready = condition((rs.get("status") or {}).get("conditions"), "Ready")
    if ready and ready.get("status") == "False" and ready.get("reason") in FATAL_READY_REASONS:
        return f"Ready=False {ready['reason']}: {short(ready.get('message'))}"
    return None


def _fatal_app_status(rs: Obj) -> str | None:
    status = rs.get("status") or {}
    for key in ("pendingServiceStatus", "activeServiceStatus"):
        block = status.get(key) or {}
        for app_name, app in (block.get("applicationStatuses") or {}).items():
            if app.get("status") == "DEPLOY_FAILED":
                return (f"RayService {name_of(rs)}: Serve app {app_name!r} on cluster {block.get('rayClusterName')} "
                        f"is DEPLOY_FAILED: {short(app.get('message') or _deployment_messages(app))}")
            for dep_name, dep in (app.get("serveDeploymentStatuses") or {}).items():
                if dep.get("status") == "DEPLOY_FAILED":
                    return (f"RayService {name_of(rs)}: Serve deployment {dep_name!r} of app {app_name!r} is "
                            f"DEPLOY_FAILED: {short(dep.get('message'))}")
    return None


def fatal_pod_sign(pods: list[Obj]) -> str | None:
    """Return why one of `pods` cannot start (image pull, crash loop, OOM...), or None. Pure."""
    for pod in pods:
        for kind, cs in container_statuses(pod):
            where = f"pod {ns_name(pod)} {kind} {cs.get('name')!r}"
            waiting = (cs.get("state") or {}).get("waiting") or {}
            terminated = _last_termination(cs)
            if terminated.get("reason") in FATAL_TERMINATED_REASONS:
                now = f", now {waiting['reason']}" if waiting.get("reason") else ""
                return (f"{where} was {terminated['reason']} (exit code {terminated.get('exitCode')}, "
                        f"{cs.get('restartCount', 0)} restarts{now}): raise its memory limit or lower the "
                        "engine's memory use")
            if waiting.get("reason") in FATAL_WAITING_REASONS:
                last = (f" (last exit: {terminated.get('reason')}, code {terminated.get('exitCode')})"
                        if terminated else "")
                return (f"{where} is {waiting['reason']}: {short(waiting.get('message'))}{last}"
                        f"{_image_note(cs, waiting['reason'])}")
    return None


def _last_termination(cs: Obj) -> Obj:
    for state in ("state", "lastState"):
        terminated = (cs.get(state) or {}).get("terminated")
        if terminated:
            return terminated
    return {}


def _fatal_cluster_condition(rs: Obj) -> str | None:
    status = rs.get("status") or {}
    for key in ("pendingServiceStatus", "activeServiceStatus"):
        block = status.get(key) or {}
        conditions = (block.get("rayClusterStatus") or {}).get("conditions")
        head = condition(conditions, "HeadPodReady")
        if head and head.get("status") == "False" and head.get("reason") in FATAL_WAITING_REASONS:
            return (f"RayCluster {block.get('rayClusterName')}: head pod not ready: {head['reason']}: "
                    f"{short(head.get('message'))}")
        failure = condition(conditions, "ReplicaFailure")
        if failure and failure.get("status") == "True":
            return (f"RayCluster {block.get('rayClusterName')}: pods cannot be created: "
                    f"{failure.get('reason')}: {short(failure.get('message'))}")
    return None


# -- progress -----------------------------------------------------------------------------------

def _progress(rs: Obj, pods: list[Obj], obs: Observation) -> Classified:
    phase = _phase(rs, pods, obs)
    if phase is Phase.WEIGHT_DOWNLOAD and (stalled := _stalled_download(rs, obs)):
        return Classified(Look(State.FATAL, f"RayService {name_of(rs)}: {stalled}"), phase)
    if phase is Phase.ENGINE_START and (stalled := _stalled_stream(rs, obs)):
        return Classified(Look(State.FATAL, f"RayService {name_of(rs)}: {stalled}"), phase)
    look = Look(State.PROGRESSING, _detail(rs, pods, phase, obs))
    if unreconciled := _unreconciled_suspect(rs):
        # An operator that just started (leader election, cache sync) may take a minute or two.
        return Classified(look, phase, unreconciled, UNRECONCILED_GRACE_S)
    suspect = (_unschedulable_suspect(pods, obs) or _unplaceable_replica_suspect(rs, pods)
               or _eviction_suspect(rs, pods, obs.events))
    return Classified(look, phase, suspect)


def _phase(rs: Obj, pods: list[Obj], obs: Observation) -> Phase:
    """Derive the phase from the live objects alone (so a restarted waiter resumes where it was)."""
    status = rs.get("status") or {}
    apps = _current_apps(status)
    if apps and all(app.get("status") == "RUNNING" for app in apps.values()):
        return Phase.SERVE_RUNNING
    if not pods or any(is_unscheduled(p) for p in pods):
        return Phase.GPU_NODES
    if any(is_pulling(p) for p in pods):
        return Phase.IMAGE_PULL
    text = " ".join(_deployment_messages(app) for app in apps.values()).lower()
    if SCHEDULING_WORDS in text:
        return Phase.GPU_NODES
    # Serve's status does not tell a weight download from an engine start (both are the replica's
    # constructor: "taken more than 30s to initialize"): an engine message or GPU memory in use do;
    # without GPU readings, disks that grew and stopped growing (which a stall also looks like).
    if any(word in text for word in ENGINE_WORDS) or _engine_started(obs):
        return Phase.ENGINE_START
    return Phase.WEIGHT_DOWNLOAD


def _engine_started(obs: Observation) -> bool:
    if obs.gpu_used_gb is not None:
        return obs.gpu_used_gb >= GPU_BUSY_GB
    return obs.disk is not None and obs.disk.growing is False


def replica_initializing(rs: Obj) -> bool:
    """Whether Serve reports a replica in its constructor (placed: downloading or loading). Pure."""
    return bool(_initializing_deployments(rs))


def _initializing_deployments(rs: Obj) -> list[str]:
    """The Serve deployments whose replica Serve says is still initializing."""
    return [name for app in _current_apps(rs.get("status") or {}).values()
            for name, dep in (app.get("serveDeploymentStatuses") or {}).items()
            if INIT_WORDS in (dep.get("message") or "")]


def _stalled_download(rs: Obj, obs: Observation) -> str | None:
    """The disk flat for `download_stall_s` with the GPUs idle while the replica initializes. Never
    without both readings: a flat disk alone may be an engine loading from a streaming source."""
    if obs.download_stall_s is None or obs.disk is None or obs.disk_flat_s is None or obs.gpu_used_gb is None:
        return None
    initializing = _initializing_deployments(rs)
    if obs.gpu_used_gb >= GPU_BUSY_GB or obs.disk_flat_s < obs.download_stall_s or not initializing:
        return None
    return stall_message(disk_gb=obs.disk.used_gb, grown_gb=obs.disk_grown_gb, flat_s=obs.disk_flat_s,
                         limit_s=obs.download_stall_s, deployment=f"Serve deployment {initializing[0]!r}",
                         source=_model_source(rs))


# The KV cache takes vLLM to `gpu_memory_utilization` of each GPU; memory within 5% of that is past the load.
KV_SHARE_SEEN = 0.95
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
STREAMING_FORMATS = ("runai_streamer", "runai_streamer_sharded", "tensorizer")   # ray.llm's list


def _stalled_stream(rs: Obj, obs: Observation) -> str | None:
    """A streamed load (vLLM reading the bucket into GPU memory, `serving.stream_weights`) whose busiest
    GPU has not grown for `download_stall_s` while the replica initializes and before vLLM took its
    share for the KV cache (weights still missing; the warm-up holds that share, flat, by design)."""
    if obs.download_stall_s is None or obs.gpu_used_gb is None or obs.gpu_flat_s is None or not obs.gpu_total_gb:
        return None
    if not _streamed(rs) or obs.gpu_flat_s < obs.download_stall_s:
        return None
    kv_gb = _gpu_memory_utilization(rs) * obs.gpu_total_gb
    initializing = _initializing_deployments(rs)
    if obs.gpu_used_gb >= KV_SHARE_SEEN * kv_gb or not initializing:
        return None
    return stream_stall_message(gpu_gb=obs.gpu_used_gb, kv_gb=kv_gb, flat_s=obs.gpu_flat_s,
                                limit_s=obs.download_stall_s, deployment=f"Serve deployment {initializing[0]!r}",
                                source=_model_source(rs))


def _streamed(rs: Obj) -> bool:
    match = re.search(r"""load_format:[ \t]*["']?([A-Za-z_]+)""", _serve_config_text(rs))
    return bool(match) and match.group(1) in STREAMING_FORMATS


def _gpu_memory_utilization(rs: Obj) -> float:
    match = re.search(r"gpu_memory_utilization:[ \t]*([0-9.]+)", _serve_config_text(rs))
    try:
        return float(match.group(1)) if match else VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    except ValueError:
        return VLLM_DEFAULT_GPU_MEMORY_UTILIZATION


def _model_source(rs: Obj) -> str | None:
    match = re.search(r"""(?:model_source|bucket_uri):[ \t]*["']?([^\s"'{}]+)""", _serve_config_text(rs))
    return match.group(1) if match else None


def _serve_config_text(rs: Obj) -> str:
    """The RayService's serveConfigV2 as its YAML text (read by pattern: a look must never raise)."""
    return str((rs.get("spec") or {}).get("serveConfigV2") or "")


def _detail(rs: Obj, pods: list[Obj], phase: Phase, obs: Observation) -> str:
    status = rs.get("status") or {}
    if phase is Phase.GPU_NODES:
        waiting = [p for p in pods if is_unscheduled(p)]
        nodes = gpu_nodes(obs.nodes)
        ready_gpu = sum(1 for n in nodes if gpu_allocatable(n) > 0)
        if not pods:
            return f"waiting for the RayCluster's pods (cluster {', '.join(cluster_names(rs)) or 'not named yet'})"
        return (f"{len(waiting)} of {len(pods)} pod(s) waiting for a node; GPU nodes with allocatable GPUs: "
                f"{ready_gpu} of {len(nodes)}")
    if phase is Phase.IMAGE_PULL:
        pulling = [name_of(p) for p in pods if is_pulling(p)]
        return f"pulling images / starting containers on {len(pulling)} pod(s): {', '.join(pulling)}"
    apps = _current_apps(status)
    which = "pending" if (status.get("pendingServiceStatus") or {}).get("rayClusterName") else "active"
    apps_text = _apps_text(apps) if apps else "no Serve apps reported yet"
    if phase is Phase.SERVE_RUNNING:
        ready = condition(status.get("conditions"), "Ready") or {}
        return (f"apps {apps_text}; waiting for the serve endpoints (Ready={ready.get('status', '?')} "
                f"{ready.get('reason', '')}, endpoints={status.get('numServeEndpoints') or 0}, "
                f"observedGeneration={status.get('observedGeneration')} of "
                f"{(rs.get('metadata') or {}).get('generation')})")
    disk = "" if obs.disk is None else (f"; worker disk ~{DISK_STEP_GB * round(obs.disk.used_gb / DISK_STEP_GB):.0f}"
                                        f" GB used{', growing' if obs.disk.growing else ''}")
    if phase is Phase.WEIGHT_DOWNLOAD and obs.disk is not None and obs.disk.growing is False:
        disk += ", not growing"
    return f"{which} cluster {_current_cluster(status)}: apps {apps_text}{disk}"


def _unreconciled_suspect(rs: Obj) -> str | None:
    """No status at all: the operator never reconciled it (KubeRay reconciles within seconds)."""
    if (rs.get("status") or {}).get("conditions"):
        return None
    return (f"RayService {ns_name(rs)} has no status: the KubeRay operator is not reconciling it; check the "
            "kuberay-operator Deployment (crash loop, missing CRDs or RBAC) and its logs")


def _unschedulable_suspect(pods: list[Obj], obs: Observation) -> str | None:
    # Only pods the scheduler tried and refused (PodScheduled=False): a pod it has not looked at yet
    # (a busy control plane) says nothing about GPU capacity.
    stuck = [p for p in pods if is_unscheduled(p) and (condition((p.get("status") or {}).get("conditions"),
                                                                "PodScheduled") or {}).get("status") == "False"]
    if not stuck or obs.gpu_capacity_coming or _scale_up_triggered(obs.events, stuck):
        return None
    coming = [n for n in gpu_nodes(obs.nodes) if gpu_allocatable(n) == 0 or not is_node_ready(n)]
    if coming:
        return None
    pod = stuck[0]
    if obs.gpu_room and has_gpu_room(pod, obs.nodes, obs.gpu_room):
        return None  # refused before the room appeared (driver ready, a pod left): kube-scheduler retries
    scheduled = condition((pod.get("status") or {}).get("conditions"), "PodScheduled") or {}
    return (f"pod {ns_name(pod)} is unschedulable ({short(scheduled.get('message')) or 'no message'}) "
            f"and no GPU capacity is coming: no GPU node is starting and no scale-up was triggered; "
            f"check the GPU node pool (size, accelerator, taints) and the pod's GPU request")


def _unplaceable_replica_suspect(rs: Obj, pods: list[Obj]) -> str | None:
    """Every Ray pod runs, yet Serve cannot place the replica: the cluster lacks what it asks for."""
    if not pods or any(is_unscheduled(p) or is_pulling(p) for p in pods):
        return None
    for app_name, app in _current_apps(rs.get("status") or {}).items():
        for dep_name, dep in (app.get("serveDeploymentStatuses") or {}).items():
            if SCHEDULING_WORDS in (dep.get("message") or ""):
                return (f"Serve deployment {dep_name!r} of app {app_name!r} cannot be placed although all "
                        f"{len(pods)} Ray pods run: {short(dep.get('message'))} (check accelerator_type, "
                        "tensor/pipeline parallel sizes against worker GPUs)")
    return None


def _eviction_suspect(rs: Obj, pods: list[Obj], events: list[Obj]) -> str | None:
    """Pods of our clusters evicted (disk pressure while downloading): KubeRay replaces them and the
    download silently starts over, so one eviction means it will happen again."""
    prefixes = tuple(f"{c}-" for c in cluster_names(rs))
    evicted = [e for e in events if e.get("reason") == "Evicted" and (event_object(e) or "").startswith(prefixes)]
    evicted += [p for p in pods if (p.get("status") or {}).get("reason") == "Evicted"]
    if not evicted:
        return None
    count = sum(int(e.get("count") or 1) for e in evicted if e.get("reason") == "Evicted") or len(evicted)
    return (f"{count} eviction(s) of the RayCluster's pods, the model download restarts each time "
            f"(last: {short(event_message(evicted[-1]))}); give the GPU nodes more local disk (Local SSD "
            "ephemeral storage, serving.worker_resources.ephemeral_storage)")


def _image_note(cs: Obj, reason: str) -> str:
    if "Image" in reason and cs.get("image"):
        return f" (image {cs['image']})"
    return ""


def _current_apps(status: Obj) -> dict[str, Obj]:
    pending = status.get("pendingServiceStatus") or {}
    if pending.get("rayClusterName"):
        return pending.get("applicationStatuses") or {}
    return (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}


def _current_cluster(status: Obj) -> str:
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName")
    return pending or (status.get("activeServiceStatus") or {}).get("rayClusterName") or "?"


def _app_healthy(app: Obj) -> bool:
    deployments = app.get("serveDeploymentStatuses") or {}
    return app.get("status") == "RUNNING" and all(d.get("status") == "HEALTHY" for d in deployments.values())


def _apps_text(apps: dict[str, Obj]) -> str:
    parts = []
    for app_name, app in sorted(apps.items()):
        deps = app.get("serveDeploymentStatuses") or {}
        inner = ", ".join(f"{d} {s.get('status')}" for d, s in sorted(deps.items()))
        parts.append(f"{app_name} {app.get('status')}" + (f" ({inner})" if inner else ""))
    return "; ".join(parts)


def _deployment_messages(app: Obj) -> str:
    messages = [app.get("message") or ""] + [d.get("message") or ""
                                             for d in (app.get("serveDeploymentStatuses") or {}).values()]
    return " ".join(m for m in messages if m)


def _scale_up_triggered(events: list[Obj], pods: list[Obj]) -> bool:
    names = {name_of(p) for p in pods}
    return any(e.get("reason") == "TriggeredScaleUp" and event_object(e) in names for e in events)

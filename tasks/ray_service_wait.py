"""Wait for the RayService to serve: watch-driven, with phase budgets and a fast failure path.

A first load of DeepSeek-R1 takes 20-30 minutes (GPU nodes, image pull, weight download, engine
start, Serve RUNNING). Each look lists the RayService and its pods and events and classifies them
(`ray_service_readiness`); between looks the waiter *watches* the RayService, so a status change
is seen at once, and it looks again at least every `look_interval_s` anyway because pod-level
signs (a worker's ImagePullBackOff) do not always touch the RayService.

The waiter keeps no state that matters across restarts: the phase is derived from the live objects,
so a flow restarted mid-wait simply resumes (the current phase's budget starts afresh).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.errors import RolloutFailed, TransientError, WaitTimedOut, only_transient_errors
from blocks.spec import StackSpec, TimeoutsSpec
from tasks.clock import Clock, SystemClock
from tasks.gateways.kube import EVENT, NODE, POD, RAY_SERVICE, KubeApi, KubeUnavailable, WatchExpired
from tasks.kube_objects import gpu_allocatable, gpu_nodes, gpu_room, is_node_ready, is_unscheduled, name_of
from tasks.ray_service_download import DiskWatch, read_workers
from tasks.ray_service_progress import ProgressReport, artifact_key, run_logger
from tasks.ray_service_readiness import (
    Classified,
    Observation,
    Phase,
    classify_ray_service,
    cluster_names,
    replica_initializing,
)
from tasks.waiting import Look, State

log = logging.getLogger(__name__)

PHASE_PERCENT = {Phase.GPU_NODES: 5.0, Phase.IMAGE_PULL: 20.0, Phase.WEIGHT_DOWNLOAD: 40.0,
                 Phase.ENGINE_START: 70.0, Phase.SERVE_RUNNING: 90.0}


@dataclass(frozen=True)
class PhaseBudgets:
    """How long (seconds of the driven world) each phase may last before it counts as stalled."""

    gpu_nodes_s: float = 45 * 60          # A3 pools: VM boot + driver install, 10-45 min (gke.md section 7)
    image_pull_s: float = 20 * 60         # ray-llm images are ~15 GB; image streaming makes it minutes
    # 640+ GB of DeepSeek-R1 weights, and the engine start too when the dashboard's GPU readings are
    # missing: then only an engine message tells the two apart (see ray_service_readiness._phase).
    weight_download_s: float = 50 * 60
    engine_start_s: float = 30 * 60       # vLLM load, NCCL init, CUDA graphs
    serve_running_s: float = 10 * 60      # services, endpoints, Ready condition

    def of(self, phase: Phase) -> float:
        return getattr(self, phase.value.replace("-", "_") + "_s")


@dataclass(frozen=True)
class WaitSettings:
    """Knobs of the wait, in seconds of the driven world (simulated seconds against the sandbox)."""

    timeout_s: float
    budgets: PhaseBudgets = PhaseBudgets()
    suspect_grace_s: float = 60.0         # e.g. unschedulable, no capacity coming: time for a scale-up to show
    look_interval_s: float = 30.0         # longest gap between two looks (pod-only signs need a look)
    min_look_gap_s: float = 2.0           # shortest gap (the operator reconciles every 2 s)
    transient_budget_s: float = 300.0     # how long API trouble is ridden out before giving up
    # The workers' disk flat this long with idle GPUs while Serve initializes the replica: a stalled
    # download, fatal. None: the stack's timeouts.download_stall_s (wait_for_ray_service_ready), else
    # StackSpec's default.
    download_stall_s: float | None = None


class _Judge:
    """Turns classified looks into a verdict: the deadline, the phase budgets, persistent suspects."""

    def __init__(self, what: str, settings: WaitSettings, clock: Clock):
        self.what, self.settings, self.clock = what, settings, clock
        self.deadline = clock.monotonic() + settings.timeout_s
        self.phase: Phase | None = None
        self.phase_since = self.suspect_since = 0.0
        self.suspect: str | None = None
        self.suspect_grace_s = settings.suspect_grace_s

    def judge(self, c: Classified) -> None:
        """Raise RolloutFailed / WaitTimedOut if `c` ends the wait badly; return otherwise."""
        now, s = self.clock.monotonic(), self.settings
        if c.look.state is State.FATAL:
            raise RolloutFailed(f"{self.what} [{c.phase.value}]: {c.look.detail}")
        if c.look.state is State.READY:
            return
        if c.phase is not self.phase:
            self.phase, self.phase_since = c.phase, now
        if c.suspect is None:
            self.suspect = None
        elif self.suspect is None:
            self.suspect, self.suspect_since = c.suspect, now
        self.suspect_grace_s = max(s.suspect_grace_s, c.suspect_min_grace_s)
        if self.suspect is not None and now - self.suspect_since >= self.suspect_grace_s:
            raise RolloutFailed(f"{self.what} [{c.phase.value}]: {c.suspect} "
                                f"(persisted {now - self.suspect_since:.0f}s)")
        budget = s.budgets.of(c.phase)
        if now - self.phase_since > budget:
            raise WaitTimedOut(f"{self.what}: stalled in phase {c.phase.value} for {now - self.phase_since:.0f}s "
                               f"(budget {budget:.0f}s); last seen: {c.look.detail}")
        if now > self.deadline:
            raise WaitTimedOut(f"{self.what} not ready after {s.timeout_s:.0f}s (phase {c.phase.value}); "
                               f"last seen: {c.look.detail}")

    def next_look_in(self) -> float:
        """Seconds until the next look is due (a deadline or a grace period may end sooner)."""
        now, s = self.clock.monotonic(), self.settings
        due = [s.look_interval_s, self.deadline - now]
        if self.phase is not None:
            due.append(self.phase_since + s.budgets.of(self.phase) - now)
        if self.suspect is not None:
            due.append(self.suspect_since + self.suspect_grace_s - now)
        return max(s.min_look_gap_s, min(due))


def observe(kube: KubeApi, namespace: str, name: str, *, capacity_coming: Callable[[], bool] | None = None,
            disk_watch: DiskWatch | None = None, download_stall_s: float | None = None,
            gpu_watch: DiskWatch | None = None) -> tuple[Observation, str]:
    """Read the RayService, its pods and events (the nodes when pods wait for one, the workers' disks
    and GPUs while the model loads; `download_stall_s` as in `WaitSettings`, None: no stall detection).

    Returns the observation and the RayService list's resourceVersion (where a watch continues).
    """
    listed = kube.list(RAY_SERVICE, namespace, field_selector=f"metadata.name={name}")
    rs = listed.items[0] if listed.items else None
    if rs is None:
        return Observation(None), listed.resource_version
    clusters = cluster_names(rs)
    pods = (kube.list(POD, namespace, label_selector=f"ray.io/cluster in ({','.join(clusters)})").items
            if clusters else [])
    events = kube.list(EVENT, namespace).items
    obs = Observation(rs, pods, events)
    first = classify_ray_service(obs)
    if first.suspect or first.phase is Phase.GPU_NODES:
        coming = bool(capacity_coming()) if capacity_coming is not None else False
        nodes = kube.list(NODE).items
        room = _gpu_room(kube, nodes) if any(is_unscheduled(p) for p in pods) else None
        obs = Observation(rs, pods, events, nodes, gpu_capacity_coming=coming, gpu_room=room)
    elif disk_watch is not None and first.phase in (Phase.WEIGHT_DOWNLOAD, Phase.ENGINE_START):
        reading = read_workers(kube, namespace, clusters[-1])
        if reading is not None:
            placed = replica_initializing(rs)
            trend = disk_watch.update(reading.disk_used_gb, placed=placed)
            if gpu_watch is not None:       # a streamed load fills GPU memory instead of the disk
                gpu_watch.update(reading.gpu_used_gb, placed=placed)
            obs = Observation(rs, pods, events, disk=trend, gpu_used_gb=reading.gpu_used_gb,
                              disk_flat_s=disk_watch.flat_s, disk_grown_gb=disk_watch.grown_gb,
                              download_stall_s=download_stall_s, gpu_total_gb=reading.gpu_total_gb,
                              gpu_flat_s=gpu_watch.flat_s if gpu_watch is not None else None)
    return obs, listed.resource_version


def _gpu_room(kube: KubeApi, nodes: list[dict]) -> dict[str, int]:
    """Free GPUs of each ready GPU node: allocatable less what the pods bound there request (any
    namespace: other teams' jobs take GPUs too)."""
    room = {}
    for node in gpu_nodes(nodes):
        if is_node_ready(node) and gpu_allocatable(node) > 0:
            bound = kube.list(POD, None, field_selector=f"spec.nodeName={name_of(node)}").items
            room[name_of(node)] = gpu_room(node, bound)
    return room


def _wait_for_change(kube: KubeApi, namespace: str, name: str, resource_version: str, *,
                     wait_s: float, clock: Clock) -> None:
    """Block until the RayService changes or `wait_s` (driven-world seconds) pass."""
    scale = float(getattr(clock, "time_scale", 1.0))     # the watch's timeouts are wall seconds
    wall_s = max(0.05, wait_s / scale)
    started = clock.monotonic()
    try:
        for event in kube.watch(RAY_SERVICE, namespace, resource_version=resource_version,
                                timeout_s=max(1.0, wall_s), idle_timeout_s=wall_s,
                                field_selector=f"metadata.name={name}"):
            if event.type != "BOOKMARK":
                return
            if clock.monotonic() - started >= wait_s:
                return
    except WatchExpired:
        return                                            # list again and watch from the new version


def _report(progress: ProgressReport, c: Classified) -> None:
    percent = 100.0 if c.look.state is State.READY else PHASE_PERCENT[c.phase]
    progress.report(percent, f"{c.phase.value}: {c.look.detail}")


def _look_once(kube: KubeApi, namespace: str, name: str, judge: _Judge, progress: ProgressReport,
               capacity_coming: Callable[[], bool] | None, watches: tuple[DiskWatch, DiskWatch]) -> tuple[Classified, str]:
    disk_watch, gpu_watch = watches
    obs, resource_version = observe(kube, namespace, name, capacity_coming=capacity_coming, disk_watch=disk_watch,
                                    download_stall_s=_download_stall_s(judge.settings), gpu_watch=gpu_watch)
    c = classify_ray_service(obs)
    _report(progress, c)
    judge.judge(c)
    return c, resource_version


def wait_for_ray_service(kube: KubeApi, namespace: str, name: str, *, settings: WaitSettings, clock: Clock,
                         capacity_coming: Callable[[], bool] | None = None,
                         progress: ProgressReport | None = None) -> Look:
    """Wait until the RayService serves; see `wait_for_ray_service_ready` for the contract."""
    what = f"RayService {namespace}/{name}"
    judge = _Judge(what, settings, clock)
    progress = progress or ProgressReport(what, key=artifact_key(name, "model-load"), log=run_logger(log))
    trouble_since: float | None = None
    watches = (DiskWatch(clock), DiskWatch(clock))      # the workers' disk, their busiest GPU's memory
    while True:
        try:
            c, resource_version = _look_once(kube, namespace, name, judge, progress, capacity_coming, watches)
            if c.look.state is State.READY:
                return c.look
            trouble_since = None
            started = clock.monotonic()
            _wait_for_change(kube, namespace, name, resource_version, wait_s=judge.next_look_in(), clock=clock)
        except TransientError as e:
            trouble_since = _ride_out(e, trouble_since, what, settings, clock, progress)
            continue
        gap = clock.monotonic() - started
        if gap < settings.min_look_gap_s:
            clock.sleep(settings.min_look_gap_s - gap)   # a burst of status updates: do not hammer the API


def _download_stall_s(settings: WaitSettings) -> float:
    if settings.download_stall_s is not None:
        return settings.download_stall_s
    return float(TimeoutsSpec.model_fields["download_stall_s"].default)


def _ride_out(error: TransientError, since: float | None, what: str, settings: WaitSettings, clock: Clock,
              progress: ProgressReport) -> float:
    """Log a transient API failure and pause; re-raise it once trouble has lasted too long."""
    now = clock.monotonic()
    since = now if since is None else since
    if now - since > settings.transient_budget_s:
        raise error
    progress.log.warning("%s: API trouble, retrying: %s", what, error)
    clock.sleep(min(settings.look_interval_s, 10.0) if not isinstance(error, KubeUnavailable) else 5.0)
    return since


@task(retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def wait_for_ray_service_ready(kube: KubeApi, spec: StackSpec, *, clock: Clock | None = None,
                               settings: WaitSettings | None = None,
                               capacity_coming: Callable[[], bool] | None = None) -> Look:
    """Wait until the stack's RayService serves as reference/kuberay.md section 0 defines.

    Returns the READY look. Raises RolloutFailed within about a minute of a fatal sign
    (ImagePullBackOff, CrashLoopBackOff, OOMKilled, DEPLOY_FAILED, ValidationFailed,
    InitializingTimeout), once the weight download has stalled for `spec.timeouts.download_stall_s`
    (unless `settings` sets its own), or once a suspect sign (pods unschedulable with no GPU capacity
    coming) outlasts its grace period; WaitTimedOut when a phase overruns its budget or after
    `spec.timeouts.model_load_s`. `capacity_coming` says whether GPU nodes are being created (e.g.
    the node pool operation is running). Stateless across restarts: call it again to resume.
    Transient API failures are ridden out for `transient_budget_s`, then retried by Prefect.
    """
    settings = settings or WaitSettings(timeout_s=spec.timeouts.model_load_s)
    if settings.download_stall_s is None:
        settings = replace(settings, download_stall_s=spec.timeouts.download_stall_s)
    return wait_for_ray_service(kube, spec.serving.namespace, spec.serving.ray_service_name,
                                settings=settings, clock=clock or SystemClock(), capacity_coming=capacity_coming)

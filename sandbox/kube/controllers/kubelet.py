"""The kubelets of all nodes: image pull, init containers, start, readiness, crashes and restarts.

A bound pod goes `ContainerCreating` while its images are pulled (per-node image cache; size over
the profile's pull rate, or a few seconds with GKE Image streaming on the node), runs its init
containers (`Init:0/1`), then `Running`; it becomes Ready when its program says so (see
`programs.py`: readiness probes, the Ray head, the Serve proxy on a Ray worker). Crashes restart the
container with the kubelet's back-off (10 s doubling to 5 min) and `CrashLoopBackOff` in between.

Faults (document: where they show):
Pod faults take `pod_prefix` and/or `node_type` (`head`, `worker`: the `ray.io/node-type` label);
with neither they apply to Ray pods (the RayService's workload), never to the operator.
- `image_pull_backoff {pod_prefix?, node_type?}`: each pull attempt of a matching pod fails -> `ErrImagePull`
  then `ImagePullBackOff` (container `state.waiting.reason`, events `Failed`/`BackOff`); a counted
  fault (`times: N`) fails N attempts and then the pull succeeds.
- `crashloop {pod_prefix?, node_type?}`: the container exits 1 shortly after each start -> `CrashLoopBackOff`,
  `lastState.terminated.reason=Error`, rising `restartCount`, event `BackOff`.
- `oom_killed {pod_prefix?, node_type?}`: Ray workers (or the named pods) are OOM-killed during the model load
  -> `lastState.terminated.reason=OOMKilled`, `exitCode: 137`, then `CrashLoopBackOff`.
- `operator_crashloop`: the KubeRay operator container exits 1 after start (see `programs.py`).
- `disk_full {pod_prefix?, node_type?}`: Ray workers are evicted for disk pressure (see `eviction.py`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube.controllers import eviction, programs
from sandbox.kube.controllers.base import NODES, PODS, Reconciler, set_condition, take_fault
from sandbox.kube.controllers.events import record_event
from sandbox.kube.store import NotFound

BACKOFF_START_S, BACKOFF_MAX_S = 10.0, 300.0
# The kubelet reports ErrImagePull until its next pod sync sees the back-off (reasoning: one sync).
ERR_IMAGE_PULL_SHOWN_S = 5.0
UNREADY_EVENT_PERIOD_S = 5.0  # readiness probe period KubeRay injects


@dataclass
class PodRun:
    """What the kubelet knows about one pod it runs (simulated seconds on the clock's elapsed axis)."""

    uid: str
    namespace: str
    name: str
    node: str
    pod_ip: str
    start_time: str
    images_at: float | None = None          # images present on the node from then
    pull_failed_at: float | None = None      # last failed pull attempt (ErrImagePull)
    pull_retry_at: float | None = None       # next attempt after back-off
    pull_failures: int = 0
    init_done_at: float | None = None
    started_at: float | None = None          # current run of the main containers
    started_stamp: str = ""
    crash_at: float | None = None
    crash_reason: tuple[str, int] = ("Error", 1)
    restart_at: float | None = None
    restarts: int = 0
    last_terminated: dict[str, Any] | None = None
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))
    events_sent: set[str] = field(default_factory=set)
    ready_recheck_at: float | None = None   # when readiness may change by itself (probe delays)
    evict_at: float | None = None           # fault disk_full: eviction for disk pressure
    evicted: bool = False
    admitted_at: float = 0.0
    pulls: dict[str, float] = field(default_factory=dict)   # image -> seconds its pull took
    unready_event_at: float = -1e18


class Kubelet(Reconciler):
    name = "kubelet"
    watches = (PODS, NODES)

    def on_start(self) -> None:
        self.runs: dict[str, PodRun] = {}
        self.image_cache: dict[tuple[str, str], float] = {}  # (node, image) -> present from
        self.ip_counters: dict[str, int] = {}
        programs.attach(self.ctx, self.kick)

    def reconcile(self) -> None:
        now = self.ctx.clock.elapsed_s()
        pods, _ = self.ctx.store.list(PODS)
        nodes = {n["metadata"]["name"]: n for n in self.ctx.store.list(NODES)[0]}
        live_uids = set()
        wakes: list[float] = []
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or node not in nodes or (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue   # terminating: its processes are stopped (`_forget`); the API server finishes it
            live_uids.add(pod["metadata"]["uid"])
            run = self.runs.get(pod["metadata"]["uid"]) or self._admit(pod, nodes[node], now)
            wake = self._step(pod, run, now)
            if wake is not None:
                wakes.append(wake)
        for uid in set(self.runs) - live_uids:
            self._forget(self.runs.pop(uid))
        hint = programs.next_change_in(self.ctx)
        if hint is not None:
            wakes.append(now + hint)
        if wakes:
            self.wake_in(max(min(wakes) - now, 0.0))

    # -- admission and the step machine ---------------------------------------------------------
    def _admit(self, pod: dict[str, Any], node: dict[str, Any], now: float) -> PodRun:
        name = node["metadata"]["name"]
        count = self.ip_counters[name] = self.ip_counters.get(name, 1) + 1
        prefix = node["spec"].get("podCIDR", "10.64.0.0/24").rsplit(".", 1)[0]
        run = PodRun(uid=pod["metadata"]["uid"], namespace=pod["metadata"].get("namespace"),
                     name=pod["metadata"]["name"], node=name, pod_ip=f"{prefix}.{count % 250 + 2}",
                     start_time=self.ctx.clock.rfc3339(), admitted_at=now)
        self.runs[run.uid] = run
        return run

    def _step(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        """Advance `run` to `now` and write the pod status; return the next due time, if any."""
        due = self._pull(pod, run, now)
        if due is None and run.images_at is not None and run.init_done_at is None:
            due = self._init(pod, run, now)
        if due is None and run.init_done_at is not None:
            due = self._run_containers(pod, run, now)
        if run.evicted:
            return None
        run.ready_recheck_at = None
        self._write(pod, run, now)
        return min((t for t in (due, run.ready_recheck_at) if t is not None), default=None)

    def _pull(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        if run.images_at is not None:
            return None if run.images_at <= now else run.images_at
        if run.pull_retry_at is not None and now < run.pull_retry_at:
            shown = run.pull_failed_at + ERR_IMAGE_PULL_SHOWN_S
            return shown if now < shown else run.pull_retry_at
        images = programs.images_of(pod)
        name = pod["metadata"]["name"]
        if take_fault(self.ctx.faults, "image_pull_backoff", key="pod_prefix", value=name,
                      applies=lambda fault: programs.is_ray_pod(pod), node_type=programs.node_type(pod)):
            run.pull_failures += 1
            run.pull_failed_at = now
            run.pull_retry_at = now + min(BACKOFF_START_S * 2 ** (run.pull_failures - 1), BACKOFF_MAX_S)
            image = images[-1]
            record_event(self.ctx, pod, "Warning", "Failed", f'Failed to pull image "{image}": '
                         f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                         f'failed to resolve reference "{image}": {image}: not found',
                         component="kubelet", host=run.node)
            record_event(self.ctx, pod, "Warning", "BackOff", f'Back-off pulling image "{image}"',
                         component="kubelet", host=run.node)
            return run.pull_retry_at
        run.pull_retry_at = None
        ready_at = now
        for image in images:
            key = (run.node, image)
            if key not in self.image_cache:
                took = programs.pull_seconds(self.ctx, image, self._streaming(run))
                self.image_cache[key] = now + took
                run.pulls[image] = took
                record_event(self.ctx, pod, "Normal", "Pulling", f'Pulling image "{image}"',
                             component="kubelet", host=run.node)
            elif self.image_cache[key] > now:
                run.pulls[image] = self.image_cache[key] - now   # another pod's pull of it is under way
            ready_at = max(ready_at, self.image_cache[key])
        run.images_at = ready_at
        return ready_at if ready_at > now else None

    def _streaming(self, run: PodRun) -> bool:
        node = self.ctx.store.get(NODES, None, run.node) or {"metadata": {}}
        return (node["metadata"].get("labels") or {}).get("cloud.google.com/gke-image-streaming") == "true"

    def _init(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        if "pulled" not in run.events_sent:
            run.events_sent.add("pulled")
            for image in programs.images_of(pod):
                if image not in run.pulls:
                    message = f'Container image "{image}" already present on machine'
                else:
                    took, waited = go_duration(run.pulls[image]), go_duration(run.images_at - run.admitted_at)
                    message = (f'Successfully pulled image "{image}" in {took} ({waited} including waiting). '
                               f"Image size: {programs.image_bytes(self.ctx, image)} bytes.")
                record_event(self.ctx, pod, "Normal", "Pulled", message, component="kubelet", host=run.node)
        waiting = programs.init_pending(self.ctx, pod, now - run.images_at)
        if waiting is None:
            run.init_done_at = now
            return None
        return now + waiting

    def _run_containers(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        if run.started_at is None:
            if run.restart_at is not None and now < run.restart_at:
                return run.restart_at
            return self._start(pod, run, now)
        if run.evict_at is not None and now >= run.evict_at:
            run.evicted = True
            programs.stopped(self.ctx, pod)
            eviction.evict(self.ctx, pod, node=run.node)
            return None
        if run.crash_at is not None and now >= run.crash_at:
            return self._crash(pod, run, now)
        return min((t for t in (run.crash_at, run.evict_at) if t is not None), default=None)

    def _start(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        run.started_at, run.started_stamp, run.restart_at = now, self.ctx.clock.rfc3339(), None
        run.container_id = secrets.token_hex(32)
        for container in (pod.get("spec") or {}).get("containers") or []:
            record_event(self.ctx, pod, "Normal", "Created", f"Created container: {container['name']}",
                         component="kubelet", host=run.node)
            record_event(self.ctx, pod, "Normal", "Started", f"Started container {container['name']}",
                         component="kubelet", host=run.node)
        crash = programs.crash_plan(self.ctx, pod)
        run.crash_at, run.crash_reason = (now + crash[0], (crash[1], crash[2])) if crash else (None, ("Error", 1))
        delay = eviction.eviction_delay_s(self.ctx, pod, programs.node_type(pod))
        run.evict_at = now + delay if delay is not None else None
        programs.started(self.ctx, pod, run.pod_ip)
        return min((t for t in (run.crash_at, run.evict_at) if t is not None), default=None)

    def _crash(self, pod: dict[str, Any], run: PodRun, now: float) -> float:
        reason, code = run.crash_reason
        run.last_terminated = {"exitCode": code, "reason": reason, "startedAt": run.started_stamp,
                               "finishedAt": self.ctx.clock.rfc3339(), "containerID": f"containerd://{run.container_id}"}
        run.restarts += 1
        run.started_at = run.crash_at = None
        run.restart_at = now + min(BACKOFF_START_S * 2 ** (run.restarts - 1), BACKOFF_MAX_S)
        programs.stopped(self.ctx, pod)
        container = ((pod.get("spec") or {}).get("containers") or [{"name": "main"}])[0]["name"]
        record_event(self.ctx, pod, "Warning", "BackOff", f"Back-off restarting failed container {container} in pod "
                     f"{pod['metadata']['name']}_{pod['metadata'].get('namespace')}({run.uid})",
                     component="kubelet", host=run.node)
        return run.restart_at

    def _forget(self, run: PodRun) -> None:
        programs.stopped(self.ctx, {"metadata": {"namespace": run.namespace, "name": run.name, "uid": run.uid}})

    def stop(self) -> None:
        super().stop()
        programs.detach(self.ctx)

    # -- status ---------------------------------------------------------------------------------
    def _write(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        status = dict(pod.get("status") or {})
        containers = [self._container_status(pod, c, run, now) for c in pod["spec"].get("containers") or []]
        inits = [self._init_status(c, run) for c in pod["spec"].get("initContainers") or []]
        ready = bool(containers) and all(c["ready"] for c in containers)
        stamp = self.ctx.clock.rfc3339()
        conditions = [dict(c) for c in status.get("conditions") or []]
        set_condition(conditions, "PodReadyToStartContainers", "True" if run.images_at is not None else "False", now=stamp)
        set_condition(conditions, "Initialized", "True" if run.init_done_at is not None else "False", now=stamp,
                      reason="" if run.init_done_at is not None else "ContainersNotInitialized")
        for ctype in ("Ready", "ContainersReady"):
            set_condition(conditions, ctype, "True" if ready else "False", now=stamp,
                          reason="" if ready else "ContainersNotReady",
                          message="" if ready else "containers with unready status: "
                          f"[{' '.join(c['name'] for c in containers if not c['ready'])}]")
        status.update(phase="Running" if run.started_at is not None or run.restarts else "Pending",
                      conditions=conditions, hostIP=_node_ip(self.ctx, run.node), podIP=run.pod_ip,
                      podIPs=[{"ip": run.pod_ip}], startTime=run.start_time, containerStatuses=containers,
                      qosClass=programs.qos_class(pod))
        if inits:
            status["initContainerStatuses"] = inits
        self.write_status(PODS, pod, status)
        if (run.started_at is not None and not ready and now - run.unready_event_at >= UNREADY_EVENT_PERIOD_S
                and programs.reports_unready(pod)):
            run.unready_event_at = now
            record_event(self.ctx, pod, "Warning", "Unhealthy", programs.UNREADY_WORKER_MESSAGE,
                         component="kubelet", host=run.node)

    def _container_status(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun,
                          now: float) -> dict[str, Any]:
        base = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                "restartCount": run.restarts, "started": run.started_at is not None,
                "lastState": {"terminated": run.last_terminated} if run.last_terminated else {}}
        if run.started_at is not None:
            ready, recheck = programs.readiness(self.ctx, pod, container, now - run.started_at)
            if recheck is not None:
                due = now + recheck
                run.ready_recheck_at = due if run.ready_recheck_at is None else min(run.ready_recheck_at, due)
            return {**base, "ready": ready, "containerID": f"containerd://{run.container_id}",
                    "state": {"running": {"startedAt": run.started_stamp}}}
        return {**base, "ready": False, "state": {"waiting": self._waiting(pod, container, run, now)}}

    def _waiting(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun, now: float) -> dict[str, str]:
        image = container.get("image", "")
        if run.pull_failed_at is not None and run.images_at is None:
            if run.pull_retry_at is not None and now - run.pull_failed_at < ERR_IMAGE_PULL_SHOWN_S:
                return {"reason": "ErrImagePull", "message": f'failed to pull and unpack image "{image}": not found'}
            return {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        if run.restart_at is not None:
            delay = min(BACKOFF_START_S * 2 ** (run.restarts - 1), BACKOFF_MAX_S)
            return {"reason": "CrashLoopBackOff", "message": f"back-off {delay:.0f}s restarting failed container="
                    f"{container['name']} pod={pod['metadata']['name']}_{pod['metadata'].get('namespace')}({run.uid})"}
        if pod["spec"].get("initContainers") and run.init_done_at is None:
            return {"reason": "PodInitializing"}
        return {"reason": "ContainerCreating"}

    def _init_status(self, container: dict[str, Any], run: PodRun) -> dict[str, Any]:
        base = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                "restartCount": 0, "lastState": {}, "started": False}
        if run.init_done_at is not None:
            return {**base, "ready": True, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "startedAt": run.start_time, "finishedAt": run.start_time}}}
        if run.images_at is not None:
            return {**base, "ready": False, "started": True, "state": {"running": {"startedAt": run.start_time}}}
        return {**base, "ready": False, "state": {"waiting": {"reason": "PodInitializing"}}}


def go_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration prints them (`2m58.123s`), as kubelet event messages show."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + text


def _node_ip(ctx: Any, node_name: str) -> str:
    node = ctx.store.get(NODES, None, node_name)
    if not node:
        return ""
    return next((a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"), "")


def delete_pod(ctx: Any, pod: dict[str, Any]) -> None:
    """Delete `pod` now (the simulated processes are gone at once; no grace period is simulated)."""
    try:
        ctx.store.delete(PODS, pod["metadata"].get("namespace"), pod["metadata"]["name"])
    except NotFound:
        return

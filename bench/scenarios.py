"""The scenarios of the fault matrix, and the step boundaries at which a run is killed or cancelled.

A scenario says how the lifecycle is driven (`driver`), which sandbox faults are injected before it
starts, at which step boundary a process is killed / a run cancelled / a spin-down started, and how
the system is expected to recover. `fast=True` marks the representative subset run in CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure import kube_requests
from blocks.spec import StackSpec


@dataclass(frozen=True)
class Scenario:
    name: str
    driver: str                       # inline | kill | cancel | twice | down-during-up
    faults: tuple[dict[str, Any], ...] = ()
    at: str | None = None             # a BOUNDARIES key (kill, cancel, down-during-up)
    phase: str = "up"                 # which flow the kill hits: up | down
    recovery: str = "rerun"           # after a kill: rerun | janitor
    cold: bool = False                # start without our cluster (else: a warm cluster, as the policy keeps)
    fast: bool = False                # part of the CI subset
    lifecycle: dict[str, Any] = field(default_factory=dict)


def _ours(inventory: dict[str, Any], spec: StackSpec) -> dict[str, Any] | None:
    return next((c for c in inventory.get("clusters", []) if c["name"] == spec.cluster.name), None)


def _pool(inventory: dict[str, Any], spec: StackSpec) -> dict[str, Any] | None:
    cluster = _ours(inventory, spec)
    return next((p for p in (cluster or {}).get("node_pools", []) if p["name"] == spec.gpu_pool.name), None)


def _kube_write(sandbox, spec: StackSpec, method: str, suffix: str) -> bool:
    return any(r["method"] == method and r["path"].endswith(suffix) for r in kube_requests(sandbox, spec))


def _gke_delete(sandbox, suffix: str) -> bool:
    return any(r["method"] == "DELETE" and r["path"].endswith(suffix) for r in sandbox.requests())


# Each boundary is a predicate over the sandbox: true once the run has crossed that step.
BOUNDARIES: dict[str, Callable[[Any, StackSpec], bool]] = {
    "cluster-creating": lambda sb, spec: (_ours(sb.inventory(), spec) or {}).get("status") == "PROVISIONING",
    "pool-creating": lambda sb, spec: _pool(sb.inventory(), spec) is not None,
    "operator-applied": lambda sb, spec: _kube_write(sb, spec, "PATCH", "/deployments/kuberay-operator"),
    "rayservice-applied": lambda sb, spec: _kube_write(
        sb, spec, "PATCH", f"/rayservices/{spec.serving.ray_service_name}"),
    "model-loading": lambda sb, spec: ((_pool(sb.inventory(), spec) or {}).get("status") == "RUNNING"
                                       and _kube_write(sb, spec, "PATCH",
                                                       f"/rayservices/{spec.serving.ray_service_name}")),
    "rayservice-deleting": lambda sb, spec: _kube_write(
        sb, spec, "DELETE", f"/rayservices/{spec.serving.ray_service_name}"),
    "pool-deleting": lambda sb, spec: _gke_delete(sb, f"/nodePools/{spec.gpu_pool.name}"),
}
UP_BOUNDARIES = ("cluster-creating", "pool-creating", "operator-applied", "rayservice-applied", "model-loading")
DOWN_BOUNDARIES = ("rayservice-deleting", "pool-deleting")

# The fault fires when the download starts; stalling at once (at_fraction 0, the disk never grows)
# makes the delay column the stall-to-teardown time. A stall mid-download (the sandbox's default 0.4)
# is timed from the stall itself in tests/e2e/test_download_stall_spin_up.py.
_STALL = {"kind": "stalled_download", "at_fraction": 0.0}


def _k8s(kind: str, **params: Any) -> dict[str, Any]:
    return {"kind": kind, **params}


def all_scenarios() -> list[Scenario]:
    """Every scenario, in report order."""
    out = [Scenario("baseline", "inline", fast=True)]
    for at in UP_BOUNDARIES:
        out.append(Scenario(f"kill-up@{at}+rerun", "kill", at=at, cold=at == "cluster-creating",
                            fast=at == "model-loading"))
    for at in DOWN_BOUNDARIES:
        out.append(Scenario(f"kill-down@{at}+rerun", "kill", at=at, phase="down"))
    out += [Scenario("kill-runner@pool-creating+janitor", "kill", at="pool-creating", recovery="janitor",
                     fast=True),
            Scenario("kill-runner@model-loading+janitor", "kill", at="model-loading", recovery="janitor")]
    for rate in (0.1, 0.3):
        pct = int(rate * 100)
        out += [Scenario(f"gke-transient-{pct}%", "inline", cold=True, fast=rate == 0.3, faults=(
                    {"kind": "transient", "rate": rate, "status": 503},)),
                Scenario(f"gke-429-busy-{pct}%", "inline", faults=(
                    {"kind": "transient", "rate": rate / 2, "status": 429},
                    {"kind": "busy_cluster", "rate": rate / 2})),
                Scenario(f"kube-transient-{pct}%", "inline", fast=rate == 0.1, faults=(
                    _k8s("kube_transient", rate=rate, status=500), _k8s("watch_disconnect", rate=rate)))]
    out += [Scenario("stockout-first-zone", "inline", fast=True, faults=({"kind": "stockout", "zone": "us-east5-a",
                                                                          "times": 1},),
                     lifecycle={"gpu_pool": {"fallback_zones": ["us-east5-b"]}}),
            Scenario("stockout-every-zone", "inline", faults=({"kind": "stockout"},),
                     lifecycle={"gpu_pool": {"fallback_zones": ["us-east5-b"]}}),
            Scenario("quota-exceeded", "inline", faults=({"kind": "quota", "metric": "NVIDIA_H100_GPUS",
                                                          "limit": 0},))]
    for kind in ("image_pull_backoff", "crashloop", "oom_killed", "deploy_failed", "unschedulable",
                 "stalled_download", "operator_crashloop", "node_lost", "wrong_answer"):
        fault = _STALL if kind == "stalled_download" else _k8s(kind)
        out.append(Scenario(f"k8s-{kind}", "inline", faults=(fault,), fast=kind == "oom_killed"))
    # The bucket copy streamed into the GPUs (serving.stream_weights) stops part-way: the wait sees an
    # engine start (GPU memory in use), so its phase budget, not the download-stall check, ends it.
    out.append(Scenario("k8s-stalled_stream", "inline", faults=({"kind": "stalled_download", "at_fraction": 0.3},),
                        lifecycle={"serving": {"model_source": "gs://team-weights/deepseek-ai/DeepSeek-R1",
                                               "staged_from": "deepseek-ai/DeepSeek-R1", "stream_weights": True}}))
    for at in ("pool-creating", "model-loading"):
        out.append(Scenario(f"cancel@{at}", "cancel", at=at, fast=at == "model-loading"))
    out += [Scenario("two-spin-ups-at-once", "twice", fast=True),
            Scenario("spin-down-during-spin-up", "down-during-up", at="pool-creating", fast=True)]
    return out

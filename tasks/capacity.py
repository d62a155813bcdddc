"""GPU capacity with fallback: try the spec's zones and capacity modes in order until a pool runs.

GPU stockouts are asynchronous (the create succeeds, the operation ends DONE with GCE_STOCKOUT and the
pool stays in ERROR with whatever VMs it got, billing). So each failed attempt's pool is deleted, and
the deletion waited for, before the next attempt, and the whole search has one time budget. Attempts
go capacity mode first, then zone: the mode order is the user's preference (a reservation is paid
for already; spot can be preempted mid model load), a zone is only where it lands.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from google.cloud.container_v1 import types as T
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from blocks.errors import CapacityError, OperationFailed, WaitTimedOut, only_transient_errors
from blocks.spec import CapacityMode, StackSpec
from tasks.clock import Clock, SystemClock
from tasks.cluster import cluster_ref
from tasks.gateways.gke import GkeGateway
from tasks.gke_operations import EnsureResult, run_logger
from tasks.node_pool import capacity_mode_of, delete_gpu_node_pool, ensure_gpu_node_pool

# Failures that belong to this zone/mode and may not happen in the next one. Anything else (bad
# request, drift, not ours, permission) would fail every attempt the same way: raise it at once.
_FALL_BACK_ON = (CapacityError, OperationFailed, WaitTimedOut)
_LIVE = {T.NodePool.Status.RUNNING, T.NodePool.Status.PROVISIONING, T.NodePool.Status.RECONCILING}


@dataclass(frozen=True)
class Placement:
    """Where and how to get the GPU VMs: one zone and one capacity mode."""

    zone: str
    mode: CapacityMode

    def __str__(self) -> str:
        return f"{self.mode.value} in {self.zone}"


@dataclass(frozen=True)
class Attempt:
    """One tried placement: what happened and how long it took (seconds of the task's clock)."""

    placement: Placement
    outcome: str          # "running", or the failure's class name ("Stockout", "QuotaExceeded", ...)
    reason: str
    elapsed_s: float


@dataclass(frozen=True)
class CapacityResult:
    """The placement that runs the pool, every attempt made, and the pool's ensure result."""

    placement: Placement
    attempts: tuple[Attempt, ...]
    pool: EnsureResult


class CapacityExhausted(CapacityError):
    """Every allowed zone and capacity mode failed (or the budget ran out). Lists every attempt."""

    def __init__(self, pool: str, attempts: list[Attempt], why: str):
        self.attempts = tuple(attempts)
        lines = "\n".join(f"  - {a.placement}: {a.outcome} after {a.elapsed_s:.0f}s: {a.reason}" for a in attempts)
        super().__init__(f"GPU node pool {pool!r}: no capacity ({why}); nothing is left running. Attempts:\n"
                         f"{lines or '  (none)'}\nAdd fallback_zones or capacity_modes, ask for quota, or "
                         "try again later")


def plan_placements(spec: StackSpec) -> list[Placement]:
    """Return the placements to try, in order: each capacity mode across every zone (pure)."""
    zones = [*spec.gpu_pool.node_locations, *spec.gpu_pool.fallback_zones]
    return [Placement(zone, mode) for mode in spec.gpu_pool.capacity_modes for zone in zones]


def placement_of(live: T.NodePool | None, placements: list[Placement]) -> int:
    """Return the index of the placement a live, healthy pool already has, else 0 (pure).

    A rerun after a fallback keeps the pool where it landed instead of moving it back to the first zone.
    """
    if live is None or live.status not in _LIVE or not live.locations:
        return 0
    current = Placement(live.locations[0], capacity_mode_of(live))
    return placements.index(current) if current in placements else 0


@task(retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_gpu_capacity(gke: GkeGateway, spec: StackSpec, *, clock: Clock | None = None,
                        budget_s: float | None = None, lease_expiry_epoch_s: int | None = None,
                        run_id: str | None = None) -> CapacityResult:
    """Get the GPU pool RUNNING in the first placement that has capacity. Idempotent.

    Within `budget_s` (default `spec.timeouts.node_pool_create_s`) tries each placement of
    `plan_placements`; a failed attempt's pool is deleted before the next. Raises CapacityExhausted
    listing every attempt when none works; other permanent errors (drift, not ours, bad request) at once.
    """
    clock, log = clock or SystemClock(), run_logger()
    placements = plan_placements(spec)
    live = gke.get_node_pool(cluster_ref(spec), spec.gpu_pool.name)
    deadline = clock.monotonic() + (budget_s if budget_s is not None else spec.timeouts.node_pool_create_s)
    attempts: list[Attempt] = []
    for placement in placements[placement_of(live, placements):]:
        left = deadline - clock.monotonic()
        if left <= 0:
            _publish_attempts(spec, attempts)
            raise CapacityExhausted(spec.gpu_pool.name, attempts, "time budget spent")
        started = clock.monotonic()
        log.info("GPU pool %s: trying %s (%.0fs of budget left)", spec.gpu_pool.name, placement, left)
        try:
            result = ensure_gpu_node_pool.fn(gke, spec, zone=placement.zone, capacity_mode=placement.mode,
                                             clock=clock, timeout_s=left, lease_expiry_epoch_s=lease_expiry_epoch_s,
                                             run_id=run_id)
        except _FALL_BACK_ON as e:
            attempts.append(_failed(placement, e, clock.monotonic() - started, log=log))
            _remove_failed_pool(gke, spec, clock=clock, log=log)
            continue
        attempts.append(Attempt(placement, "running", "; ".join(result.steps), clock.monotonic() - started))
        log.info("GPU pool %s: running with %s", spec.gpu_pool.name, placement)
        _publish_attempts(spec, attempts)
        return CapacityResult(placement, tuple(attempts), result)
    _publish_attempts(spec, attempts)
    raise CapacityExhausted(spec.gpu_pool.name, attempts, "every zone and capacity mode failed")


def _failed(placement: Placement, error: Exception, elapsed_s: float, *,
            log: logging.Logger | logging.LoggerAdapter) -> Attempt:
    attempt = Attempt(placement, type(error).__name__, str(error), elapsed_s)
    log.warning("GPU pool: %s failed after %.0fs: %s: %s", placement, elapsed_s, attempt.outcome, error)
    return attempt


def _publish_attempts(spec: StackSpec, attempts: list[Attempt]) -> None:
    """Show the attempts as a table artifact of the task run (nothing outside a Prefect run)."""
    if TaskRunContext.get() is None:
        return
    rows = [{"zone": a.placement.zone, "capacity_mode": a.placement.mode.value, "outcome": a.outcome,
             "elapsed_s": round(a.elapsed_s), "reason": a.reason[:500]} for a in attempts]
    create_table_artifact(rows, key=re.sub(r"[^a-z0-9-]", "-", f"{spec.name}-gpu-capacity"),
                          description=f"GPU capacity attempts for pool {spec.gpu_pool.name!r}, in order")


def _remove_failed_pool(gke: GkeGateway, spec: StackSpec, *, clock: Clock,
                        log: logging.Logger | logging.LoggerAdapter) -> None:
    """Delete the failed attempt's pool (its VMs may be billing) and wait until it is gone."""
    if delete_gpu_node_pool.fn(gke, spec, clock=clock):
        log.info("GPU pool %s: deleted the failed pool before the next attempt", spec.gpu_pool.name)

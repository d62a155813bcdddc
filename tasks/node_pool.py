"""The GPU node pool: ensure it exists in one zone and capacity mode as the spec says, or delete it.

`ensure_gpu_node_pool` observes, plans (pure `plan_node_pool`), acts and re-observes until NOOP:
absent -> create (v1beta1 when a host maintenance interval is set) and wait; PROVISIONING/RECONCILING/
STOPPING -> wait for the operation in flight; ERROR or RUNNING_WITH_ERROR (a stockout leaves one) ->
delete and recreate; label drift -> one update; drift in anything else -> DriftError. Node pools are
never adopted: one without our owner labels for this stack is refused. A pool operation that ends in
a stockout raises `Stockout` and leaves the pool behind: `tasks.capacity` deletes it and falls back.
"""

from __future__ import annotations

import logging

from google.cloud.container_v1 import types as T
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.errors import AlreadyExists, DriftError, ResourceBusy, WaitTimedOut, only_transient_errors
from blocks.render_gke import create_node_pool_request
from blocks.spec import CapacityMode, StackSpec
from tasks.clock import Clock, SystemClock
from tasks.cluster import check_owner, cluster_ref, missing_labels
from tasks.gateways.gke import ClusterRef, GkeGateway
from tasks.gke_operations import (
    Action,
    EnsureResult,
    Plan,
    find_operation_in_flight,
    run_logger,
    settle_operation_in_flight,
    wait_for_gke_operation,
)

S = T.NodePool.Status
_BUSY = {S.PROVISIONING: "being created", S.RECONCILING: "being updated", S.STOPPING: "being deleted"}
_BROKEN = {S.ERROR, S.RUNNING_WITH_ERROR}
_MAX_ROUNDS = 8
_NO_OPERATION_POLL_S = 15.0


def desired_node_pool(spec: StackSpec, *, zone: str, capacity_mode: CapacityMode,
                      lease_expiry_epoch_s: int | None = None, run_id: str | None = None) -> T.NodePool:
    """Return the GPU pool the spec asks for in `zone` and `capacity_mode`, with owner labels (pure)."""
    return create_node_pool_request(spec, zone=zone, capacity_mode=capacity_mode,
                                    lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id).node_pool


def capacity_mode_of(pool: T.NodePool) -> CapacityMode:
    """Return the capacity mode a pool was created with, read from its config (pure)."""
    config = pool.config
    if pool.queued_provisioning.enabled:
        return CapacityMode.QUEUED
    if config.flex_start:
        return CapacityMode.FLEX_START
    if config.spot or config.preemptible:
        return CapacityMode.SPOT
    if config.reservation_affinity.consume_reservation_type == \
            T.ReservationAffinity.Type.SPECIFIC_RESERVATION:
        return CapacityMode.RESERVATION
    return CapacityMode.ON_DEMAND


_ONLY_WHEN_SET = {"reservation", "placement_policy", "local_ssd_count", "image_streaming", "gvnic"}


def _frozen_fields(pool: T.NodePool) -> dict[str, object]:
    config = pool.config
    return {
        "machine_type": config.machine_type,
        "accelerators": sorted((a.accelerator_type, int(a.accelerator_count),
                                int(a.gpu_driver_installation_config.gpu_driver_version))
                               for a in config.accelerators),
        "locations": sorted(pool.locations),
        "capacity_mode": capacity_mode_of(pool).value,
        "reservation": list(config.reservation_affinity.values),
        "placement_policy": pool.placement_policy.policy_name,
        "local_ssd_count": config.ephemeral_storage_local_ssd_config.local_ssd_count,
        "image_streaming": config.gcfs_config.enabled,
        "gvnic": config.gvnic.enabled,
        "initial_node_count": pool.initial_node_count,
    }


def frozen_pool_drift(live: T.NodePool, desired: T.NodePool) -> dict[str, tuple[object, object]]:
    """Return {field: (live, spec)} for the fields a pool cannot change without being recreated (pure).

    Node count is compared at creation size: GKE keeps `initialNodeCount` and we do not resize.
    Optional settings count only when the spec sets them: GKE may turn some on by itself (e.g. gVNIC
    on accelerator-optimized machines), and that is not drift.
    """
    have, want = _frozen_fields(live), _frozen_fields(desired)
    return {k: (have[k], want[k]) for k in want
            if have[k] != want[k] and (k not in _ONLY_WHEN_SET or want[k])}


def plan_node_pool(live: T.NodePool | None, desired: T.NodePool, *, stack: str) -> Plan:
    """Decide the next step for the node pool (pure).

    Raises NotOursError for a pool without our owner labels for `stack`, and DriftError (saying what
    differs and how to proceed) when a RUNNING pool differs in a field that cannot be updated.
    """
    if live is None:
        return Plan(Action.CREATE, "absent")
    labels = dict(live.config.resource_labels)
    check_owner("node pool", live.name, labels, stack)
    status = S(live.status)
    if status in _BUSY:
        return Plan(Action.WAIT, f"{status.name}: {_BUSY[status]}")
    if status in _BROKEN:
        return Plan(Action.RECREATE, f"{status.name}: {live.status_message or 'no message'}")
    if frozen := frozen_pool_drift(live, desired):
        details = "; ".join(f"{f}: live {a!r}, spec {b!r}" for f, (a, b) in sorted(frozen.items()))
        raise DriftError(f"node pool {live.name!r} differs from the spec in fields that cannot be updated: "
                         f"{details}. Delete the pool (delete_gpu_node_pool, or the teardown flow) and run "
                         "again to recreate it, or change the spec back to the live values")
    if changed := missing_labels(labels, dict(desired.config.resource_labels)):
        return Plan(Action.UPDATE, "labels differ", tuple(f"config.resource_labels.{k}" for k in sorted(changed)))
    return Plan(Action.NOOP, f"{status.name} and matching the spec")


@task(retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_gpu_node_pool(gke: GkeGateway, spec: StackSpec, *, zone: str | None = None,
                         capacity_mode: CapacityMode | None = None, clock: Clock | None = None,
                         timeout_s: float | None = None, lease_expiry_epoch_s: int | None = None,
                         run_id: str | None = None) -> EnsureResult:
    """Make the GPU pool exist in `zone`/`capacity_mode` (default: the spec's first), RUNNING and matching.

    Idempotent: a repeat call makes no writes. Waits up to `timeout_s` (default
    `spec.timeouts.node_pool_create_s`, on `clock`). Raises Stockout/QuotaExceeded when GKE has no
    capacity (the failed pool stays: delete it before trying elsewhere), NotOursError, DriftError,
    WaitTimedOut, OperationFailed, or a TransientError that a task retry resolves.
    """
    clock, log, ref = clock or SystemClock(), run_logger(), cluster_ref(spec)
    desired = desired_node_pool(spec, zone=zone or spec.gpu_pool.node_locations[0],
                                capacity_mode=capacity_mode or spec.gpu_pool.capacity_modes[0],
                                lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id)
    deadline = clock.monotonic() + (timeout_s if timeout_s is not None else spec.timeouts.node_pool_create_s)
    steps: list[str] = []
    for _ in range(_MAX_ROUNDS):
        live = gke.get_node_pool(ref, desired.name)                               # observe
        plan = plan_node_pool(live, desired, stack=spec.name)
        if plan.action is Action.NOOP:
            log.info("node pool %s: %s", desired.name, plan.reason)
            return EnsureResult(desired.name, tuple(steps) + (f"unchanged: {plan.reason}",), live)
        if clock.monotonic() > deadline:
            raise WaitTimedOut(f"node pool {desired.name!r} still needs '{plan.action.value}' ({plan.reason}) "
                               f"when its time ran out; done so far: {steps}. Run again")
        log.info("node pool %s: %s (%s)", desired.name, plan.action.value, plan.reason)
        steps.append(_act(gke, ref, plan, desired, live, spec=spec, deadline=deadline, clock=clock, log=log))
    raise ResourceBusy(f"node pool {ref.node_pool_path(desired.name)} did not settle within {_MAX_ROUNDS} "
                       f"rounds ({'; '.join(steps)}); run again")


def _act(gke: GkeGateway, ref: ClusterRef, plan: Plan, desired: T.NodePool, live: T.NodePool | None, *,
         spec: StackSpec,
         deadline: float, clock: Clock, log: logging.Logger | logging.LoggerAdapter) -> str:
    """Carry out one planned step and wait for it; return a line saying what was done."""
    path = ref.node_pool_path(desired.name)

    def wait(op: T.Operation, what: str) -> None:
        wait_for_gke_operation(gke, ref, op, what=f"{what} {path}", clock=clock, log=log,
                               timeout_s=deadline - clock.monotonic())

    if plan.action is Action.CREATE:
        try:
            op = gke.create_node_pool(ref, desired,
                                      host_maintenance_interval=spec.gpu_pool.host_maintenance_interval)
        except AlreadyExists:
            return "create found it already there (observing again)"
        wait(op, "create node pool")
        return f"created in {list(desired.locations)} as {capacity_mode_of(desired).value} ({op.name})"
    if plan.action is Action.RECREATE:
        if op := gke.delete_node_pool(ref, desired.name):
            wait(op, "delete node pool in error")
        return f"deleted the pool in error ({plan.reason})"
    if plan.action is Action.UPDATE:
        labels = {**live.config.resource_labels, **desired.config.resource_labels}
        wait(gke.set_node_pool_labels(ref, desired.name, labels), "update labels of node pool")
        return f"updated {', '.join(plan.diff)}"
    op = find_operation_in_flight(gke, ref, path)
    if op is None:
        clock.sleep(_NO_OPERATION_POLL_S)
        return f"waited: {plan.reason}, no operation listed yet"
    wait(op, f"{plan.reason}:")
    return f"waited for {op.name} ({plan.reason})"


@task(retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def delete_gpu_node_pool(gke: GkeGateway, spec: StackSpec, *, clock: Clock | None = None) -> bool:
    """Delete the spec's GPU pool and wait until it is gone. Idempotent: absent (or no cluster) is success.

    An operation in flight on the pool (a create, even one about to stock out, or another delete) is
    waited for first. Returns True when the pool was there (and is now gone), False when it was not.
    Refuses (NotOursError) a pool without our owner labels for this stack. Waits up to
    `spec.timeouts.delete_s`.
    """
    clock, log, ref = clock or SystemClock(), run_logger(), cluster_ref(spec)
    deadline, path = clock.monotonic() + spec.timeouts.delete_s, ref.node_pool_path(spec.gpu_pool.name)
    live = gke.get_node_pool(ref, spec.gpu_pool.name)
    if live is None:
        log.info("node pool %s: already gone", path)
        return False
    check_owner("node pool", live.name, dict(live.config.resource_labels), spec.name)
    if live.status in _BUSY:
        settle_operation_in_flight(gke, ref, path, what=f"before deleting node pool {path}", clock=clock,
                                   log=log, timeout_s=deadline - clock.monotonic())
        if gke.get_node_pool(ref, spec.gpu_pool.name) is None:                                    # re-observe: that was a delete
            return True
    if op := gke.delete_node_pool(ref, spec.gpu_pool.name):
        wait_for_gke_operation(gke, ref, op, what=f"delete node pool {path}", clock=clock, log=log,
                               timeout_s=deadline - clock.monotonic())
    return True

"""The GKE cluster: ensure it exists as the spec says, or delete it, idempotently.

`ensure_cluster` observes, plans (pure `plan_cluster`), acts and re-observes until the plan is NOOP:
absent -> create and wait; PROVISIONING/RECONCILING/STOPPING -> wait for the operation in flight;
ERROR -> delete and recreate; label drift -> one set-labels call; drift in a field we do not update in
place -> DriftError. A cluster without our owner labels is used only when `cluster.adopt_existing` is
set (and then never written to or deleted); one labelled for another stack is never touched.
"""

from __future__ import annotations

import logging

from google.cloud.container_v1 import types as T
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import labels as owner
from blocks.errors import (
    AlreadyExists,
    CapacityError,
    DriftError,
    NotOursError,
    OperationFailed,
    ResourceBusy,
    WaitTimedOut,
    only_transient_errors,
)
from blocks.render_gke import DEFAULT_POOL_NAME, create_cluster_request, workload_identity_gap
from blocks.spec import StackSpec
from tasks.clock import Clock, SystemClock
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

S = T.Cluster.Status
_BUSY = {S.PROVISIONING: "being created", S.RECONCILING: "being updated", S.STOPPING: "being deleted"}
_MAX_ROUNDS = 8
# How long to look again when GKE reports the cluster busy but lists no operation for it yet.
_NO_OPERATION_POLL_S = 15.0
CLUSTER_OP_MAX_POLL_S = 10.0


def cluster_ref(spec: StackSpec) -> ClusterRef:
    """Return where the spec's cluster lives."""
    return ClusterRef(spec.cluster.project, spec.cluster.location, spec.cluster.name)


def desired_cluster(spec: StackSpec, *, lease_expiry_epoch_s: int | None = None,
                    run_id: str | None = None) -> T.Cluster:
    """Return the cluster the spec asks for, with our owner labels (pure)."""
    return create_cluster_request(spec, lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id).cluster


def check_owner(kind: str, name: str, labels: dict[str, str], stack: str) -> None:
    """Raise NotOursError unless `labels` say we manage the resource for `stack` (pure)."""
    if owner.is_ours(labels, stack):
        return
    if owner.is_ours(labels):
        raise NotOursError(f"{kind} {name!r} belongs to stack {labels.get(owner.STACK_KEY)!r}, not {stack!r}; "
                           "use another name for this stack or act from the owning stack")
    raise NotOursError(f"{kind} {name!r} exists without our owner labels ({owner.MANAGED_BY_KEY}="
                       f"{owner.MANAGED_BY_VALUE}, {owner.STACK_KEY}={stack}); we do not touch it. Use another "
                       "name, or delete it yourself if it is a leftover")


def _default_pool_drift(live: T.Cluster, desired: T.Cluster) -> dict[str, tuple[object, object]]:
    live_pools = {p.name: p for p in live.node_pools}
    drift: dict[str, tuple[object, object]] = {}
    for want in desired.node_pools:
        have = live_pools.get(want.name)
        if have is not None and want.config.machine_type and have.config.machine_type != want.config.machine_type:
            drift[f"node_pools[{want.name}].machine_type"] = (have.config.machine_type, want.config.machine_type)
    return drift


def frozen_cluster_drift(live: T.Cluster, desired: T.Cluster) -> dict[str, tuple[object, object]]:
    """Return {field: (live, spec)} for fields ensure_cluster does not update in place (pure).

    Only fields the spec sets are compared; GKE fills in the rest.
    """
    drift = _default_pool_drift(live, desired)
    for field in ("network", "subnetwork"):
        want, have = getattr(desired, field), getattr(live, field)
        if want and have and want != have:
            drift[field] = (have, want)
    want_channel, have_channel = desired.release_channel.channel, live.release_channel.channel
    if want_channel and want_channel != have_channel:
        drift["release_channel"] = (T.ReleaseChannel.Channel(have_channel).name,
                                    T.ReleaseChannel.Channel(want_channel).name)
    want_gcfs = desired.node_pool_defaults.node_config_defaults.gcfs_config.enabled
    have_gcfs = live.node_pool_defaults.node_config_defaults.gcfs_config.enabled
    if want_gcfs != have_gcfs:
        drift["image_streaming"] = (have_gcfs, want_gcfs)
    return drift


def missing_labels(live: dict[str, str], desired: dict[str, str]) -> dict[str, str]:
    """Return the desired labels the live resource lacks or has with another value (pure)."""
    return {k: v for k, v in desired.items() if live.get(k) != v}


def plan_cluster(live: T.Cluster | None, desired: T.Cluster, *, stack: str, adopt_existing: bool) -> Plan:
    """Decide the next step for the cluster (pure).

    Raises NotOursError for a cluster of another stack, or an unlabelled one unless `adopt_existing`;
    DriftError for drift in a field we do not update in place; OperationFailed for an adopted cluster
    in ERROR (we never delete what we do not own).
    """
    if live is None:
        return Plan(Action.CREATE, "absent")
    labels = dict(live.resource_labels)
    adopted = adopt_existing and not owner.is_ours(labels)
    if not adopted:
        check_owner("cluster", live.name, labels, stack)
    status = S(live.status)
    if status in _BUSY:
        return Plan(Action.WAIT, f"{status.name}: {_BUSY[status]}")
    if status is S.ERROR:
        if adopted:
            raise OperationFailed(f"adopted cluster {live.name!r} is in ERROR ({live.status_message}); we do not "
                                  "delete clusters we do not own: repair or delete it yourself")
        return Plan(Action.RECREATE, f"ERROR: {live.status_message or 'no message'}")
    if adopted:
        return Plan(Action.NOOP, f"adopted (no owner labels), {status.name}")
    if frozen := frozen_cluster_drift(live, desired):
        details = "; ".join(f"{f}: live {a!r}, spec {b!r}" for f, (a, b) in sorted(frozen.items()))
        raise DriftError(f"cluster {live.name!r} differs from the spec where ensure_cluster cannot update it: "
                         f"{details}. Change the spec back to the live values, or delete the cluster "
                         "(teardown with delete_cluster_on_teardown) and run again")
    if changed := missing_labels(labels, dict(desired.resource_labels)):
        return Plan(Action.UPDATE, "labels differ", tuple(f"resource_labels.{k}" for k in sorted(changed)))
    return Plan(Action.NOOP, f"{status.name} and matching the spec")


@task(retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_cluster(gke: GkeGateway, spec: StackSpec, *, clock: Clock | None = None,
                   lease_expiry_epoch_s: int | None = None, run_id: str | None = None) -> EnsureResult:
    """Make the spec's cluster exist, RUNNING and matching the spec. Idempotent: a repeat call makes no writes.

    Waits (within `spec.timeouts.cluster_create_s` of `clock`) for any operation it starts or finds
    in flight. Raises NotOursError, DriftError (also when the cluster lacks the Workload Identity a gs://
    model source needs), OperationFailed, WaitTimedOut (permanent) or a TransientError that a task retry
    resolves.
    """
    clock, log, ref = clock or SystemClock(), run_logger(), cluster_ref(spec)
    desired = desired_cluster(spec, lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id)
    deadline = clock.monotonic() + spec.timeouts.cluster_create_s
    steps: list[str] = []
    for _ in range(_MAX_ROUNDS):
        live = gke.get_cluster(ref)                                               # observe
        plan = plan_cluster(live, desired, stack=spec.name, adopt_existing=spec.cluster.adopt_existing)
        if plan.action is Action.NOOP:
            if gap := workload_identity_gap(spec, live):
                # A cluster kept from before may predate a gs:// model source: say what to run, before
                # any GPU bills (the Ray pods or the staging Job would fail later on a 403 from the bucket).
                raise DriftError(gap)
            log.info("cluster %s: %s", ref.path, plan.reason)
            return EnsureResult(ref.name, tuple(steps) + (f"unchanged: {plan.reason}",), live)
        if clock.monotonic() > deadline:
            raise WaitTimedOut(f"cluster {ref.path} still needs '{plan.action.value}' ({plan.reason}) after "
                               f"{spec.timeouts.cluster_create_s:.0f}s; done so far: {steps}. Run again")
        log.info("cluster %s: %s (%s)", ref.path, plan.action.value, plan.reason)
        steps.append(_act(gke, ref, plan, desired, live, deadline=deadline, clock=clock, log=log))
    raise ResourceBusy(f"cluster {ref.path} did not settle within {_MAX_ROUNDS} rounds ({'; '.join(steps)}); "
                       "run again")


def _act(gke: GkeGateway, ref: ClusterRef, plan: Plan, desired: T.Cluster, live: T.Cluster | None, *,
         deadline: float, clock: Clock, log: logging.Logger | logging.LoggerAdapter) -> str:
    """Carry out one planned step and wait for it; return a line saying what was done."""
    def wait(op: T.Operation, what: str) -> None:
        # Polls capped at 10 s: the cluster create gates the GPU pool request, so a 30 s poll would add
        # ~15 s on average to the critical path; 30-odd GETs over a 5-minute create cost nothing.
        wait_for_gke_operation(gke, ref, op, what=f"{what} {ref.path}", clock=clock, log=log,
                               timeout_s=deadline - clock.monotonic(), max_poll_s=CLUSTER_OP_MAX_POLL_S)

    if plan.action is Action.CREATE:
        try:
            op = gke.create_cluster(ref, desired)
        except AlreadyExists:
            return "create found it already there (observing again)"
        wait(op, "create cluster")
        return f"created ({op.name})"
    if plan.action is Action.RECREATE:
        if op := gke.delete_cluster(ref):
            wait(op, "delete cluster in ERROR")
        return f"deleted the cluster in ERROR ({plan.reason})"
    if plan.action is Action.UPDATE:
        labels = {**live.resource_labels, **desired.resource_labels}
        wait(gke.set_cluster_labels(ref, labels, fingerprint=live.label_fingerprint), "set labels on cluster")
        return f"updated {', '.join(plan.diff)}"
    return _wait_in_flight(gke, ref, plan, wait=wait, clock=clock)


def _wait_in_flight(gke: GkeGateway, ref: ClusterRef, plan: Plan, *, wait, clock: Clock) -> str:
    """Wait for the operation keeping the cluster busy. One on a node pool may fail (a GPU stockout):
    that is the pool's business, so the cluster is observed again rather than failed."""
    op = find_operation_in_flight(gke, ref, ref.path, include_children=True)
    if op is None:
        clock.sleep(_NO_OPERATION_POLL_S)
        return f"waited: {plan.reason}, no operation listed yet"
    try:
        wait(op, f"{plan.reason}:")
    except (CapacityError, OperationFailed) as e:
        if "/nodePools/" not in op.target_link:
            raise
        return f"waited for {op.name} on a node pool, which failed ({type(e).__name__})"
    return f"waited for {op.name} ({plan.reason})"


def check_no_foreign_pools(live: T.Cluster, stack: str) -> None:
    """Raise NotOursError when the cluster holds node pools someone else added (pure).

    Deleting a cluster deletes every pool in it, so a pool without our owner labels (other than the
    default pool created with the cluster) makes the cluster someone else's business too.
    """
    foreign = sorted(p.name for p in live.node_pools if p.name != DEFAULT_POOL_NAME
                     and not owner.is_ours(dict(p.config.resource_labels), stack))
    if foreign:
        raise NotOursError(f"cluster {live.name!r} holds node pool(s) {foreign} without our owner labels for "
                           f"stack {stack!r}; deleting the cluster would delete them too, so we keep it. Remove "
                           "those pools yourself, or keep the cluster (lifecycle.delete_cluster_on_teardown: false)")


@task(retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def delete_cluster(gke: GkeGateway, spec: StackSpec, *, clock: Clock | None = None) -> bool:
    """Delete the spec's cluster and wait until it is gone. Idempotent: absent is success.

    An operation in flight (a create, or another delete) is waited for first. Returns True when the
    cluster was there (and is now gone), False when it already was. Refuses (NotOursError) a cluster
    without our owner labels for this stack, adopted ones included. Waits up to `spec.timeouts.delete_s`.
    """
    clock, log, ref = clock or SystemClock(), run_logger(), cluster_ref(spec)
    deadline = clock.monotonic() + spec.timeouts.delete_s
    live = gke.get_cluster(ref)
    if live is None:
        log.info("cluster %s: already gone", ref.path)
        return False
    check_owner("cluster", ref.name, dict(live.resource_labels), spec.name)
    check_no_foreign_pools(live, spec.name)
    if live.status in _BUSY:
        settle_operation_in_flight(gke, ref, ref.path, what=f"before deleting cluster {ref.path}", clock=clock,
                                   log=log, timeout_s=deadline - clock.monotonic())
        if gke.get_cluster(ref) is None:                                    # re-observe: that was a delete
            return True
    if op := gke.delete_cluster(ref):
        wait_for_gke_operation(gke, ref, op, what=f"delete cluster {ref.path}", clock=clock, log=log,
                               timeout_s=deadline - clock.monotonic())
    return True

"""Waiting for GKE long-running operations, and finding the one in flight for a resource.

A GKE `Operation` is not a google.longrunning LRO: there is no `.result()` and v1 has no wait
method, so we poll `get_operation`. DONE is not success: the finished operation carries the error
(a GPU stockout appears only there), which `wait_for_gke_operation` raises as ours.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from google.cloud.container_v1 import types as T
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from blocks.errors import PermanentError, TransientError, WaitTimedOut
from tasks.clock import Clock
from tasks.gateways.gke import ClusterRef, GkeGateway, backoff_delay_s, operation_failure

DONE = T.Operation.Status.DONE
_DEFAULT_LOG = logging.getLogger(__name__)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Return the Prefect run logger inside a flow/task run, else this module's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _DEFAULT_LOG


def describe_operation(op: T.Operation) -> str:
    """One line saying what the operation is doing: status, progress metrics and GKE's message."""
    parts = [T.Operation.Status(op.status).name]
    for metric in op.progress.metrics:
        value = metric.int_value or metric.double_value or metric.string_value
        if metric.name and value:
            parts.append(f"{metric.name}={value}")
    parts += [m for m in (op.status_message, op.detail) if m]
    return ", ".join(parts)


def wait_for_gke_operation(gke: GkeGateway, ref: ClusterRef, operation: T.Operation, *, what: str,
                           timeout_s: float, clock: Clock,
                           log: logging.Logger | logging.LoggerAdapter | None = None,
                           initial_poll_s: float = 5.0, max_poll_s: float = 30.0,
                           rng: random.Random | None = None) -> T.Operation:
    """Poll `operation` until DONE and return it, when it finished without an error.

    Polls back off (x1.5 up to `max_poll_s`, jittered); a line is logged whenever the status or
    GKE's progress message changes. Transient read errors are retried here until the deadline.
    Raises WaitTimedOut after `timeout_s` (of `clock`), and Stockout/QuotaExceeded/OperationFailed
    when the DONE operation carries an error.
    """
    log, rng = log or run_logger(), rng or random.Random()
    deadline, last, attempt = clock.monotonic() + timeout_s, None, 0
    op = operation
    while op.status != DONE:
        detail = describe_operation(op)
        left = deadline - clock.monotonic()
        if detail != last:
            log.info("%s: operation %s %s (%.0fs left)", what, op.name, detail, left)
            last = detail
        if left <= 0:
            raise WaitTimedOut(f"{what}: operation {op.name} not done after {max(timeout_s, 0):.0f}s; last seen: "
                               f"{detail}. It may still finish: rerun to pick it up, or cancel it in GKE")
        clock.sleep(min(left, backoff_delay_s(attempt, initial_s=initial_poll_s, max_s=max_poll_s,
                                              multiplier=1.5, rng=rng)))
        attempt += 1
        op = _read_operation(gke, ref, op, log=log)
    if failure := operation_failure(op, what):
        raise failure
    log.info("%s: operation %s done", what, op.name)
    return op


def _read_operation(gke: GkeGateway, ref: ClusterRef, op: T.Operation, *,
                    log: logging.Logger | logging.LoggerAdapter) -> T.Operation:
    """Re-read `op`; on a transient error keep the last state (the deadline still bounds the wait)."""
    try:
        return gke.get_operation(ref, op.name)
    except TransientError as e:
        log.warning("reading operation %s failed transiently: %s", op.name, e)
        return op


def _targets(op: T.Operation, resource_path: str, *, include_children: bool) -> bool:
    """True when the operation targets `resource_path` (or, if asked, something inside it).

    Target links may use the legacy `zones/` form, so only the part from `/clusters/` on must match.
    """
    link = op.target_link or op.self_link or ""
    tail = "/clusters/" + resource_path.split("/clusters/", 1)[-1]
    return link.endswith(tail) or (include_children and f"{tail}/" in link)


def find_operation_in_flight(gke: GkeGateway, ref: ClusterRef, resource_path: str, *,
                             include_children: bool = False) -> T.Operation | None:
    """Return an unfinished operation targeting `resource_path` (a cluster or node pool path), or None.

    With `include_children`, an operation on something inside it (a cluster's node pool) also counts;
    one on the resource itself is preferred.
    """
    running = [op for op in gke.list_operations(ref) if op.status != DONE]
    exact = [op for op in running if _targets(op, resource_path, include_children=False)]
    inside = [op for op in running if _targets(op, resource_path, include_children=include_children)]
    return (exact or inside or [None])[0]


def settle_operation_in_flight(gke: GkeGateway, ref: ClusterRef, resource_path: str, *, what: str,
                               timeout_s: float, clock: Clock,
                               log: logging.Logger | logging.LoggerAdapter) -> T.Operation | None:
    """Wait for the operation in flight on `resource_path` to end, whatever its outcome; return it.

    For deletes: a resource being created or updated refuses a delete until that operation ends, and
    a failed create (stockout) still leaves a resource to delete. Returns None when nothing is in
    flight. Raises WaitTimedOut when the operation outlives `timeout_s`.
    """
    op = find_operation_in_flight(gke, ref, resource_path)
    if op is None:
        return None
    try:
        return wait_for_gke_operation(gke, ref, op, what=what, timeout_s=timeout_s, clock=clock, log=log)
    except WaitTimedOut:
        raise
    except PermanentError as e:
        log.info("%s: the operation in flight ended in error, going on: %s", what, e)
        return op


class Action(str, Enum):
    """What a `plan_*` decided for one round of an `ensure_*`."""

    NOOP = "noop"            # live matches the spec: no write
    CREATE = "create"        # absent: create and wait
    WAIT = "wait"            # busy (PROVISIONING, RECONCILING, STOPPING): wait for the operation in flight
    RECREATE = "recreate"    # ERROR: delete, wait, then create in the next round
    UPDATE = "update"        # mutable drift: one update call, then wait


@dataclass(frozen=True)
class Plan:
    """A pure decision: the action, why, and the fields that differ (for UPDATE)."""

    action: Action
    reason: str
    diff: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnsureResult:
    """What an `ensure_*` did: the resource's name, each step taken, and the final live object."""

    name: str
    steps: tuple[str, ...]
    live: Any = field(repr=False, compare=False, default=None)

    @property
    def changed(self) -> bool:
        """True when any write was made (a NOOP-only run makes none)."""
        return any(not s.startswith(("unchanged", "waited")) for s in self.steps)

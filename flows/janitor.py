"""`janitor`: the last line against leaks. Finds everything carrying our owner labels in the scopes
of the given stacks and tears down what is past its lease or whose spin-up run is dead.

It needs nothing from the run that created a resource, only the labels on the resource itself and the
Prefect API, so it works after the host of a spin-up died. A stack named in the parameters is torn down
by its own policy (keep the cluster or not); a stack found only by its labels loses everything we own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import Field, StrictBool

from blocks import labels as owner
from blocks.errors import GkeLlmFlowsError
from blocks.spec import StackSpec
from flows.connections import Connections
from flows.locks import stack_lock
from flows.spin_down import tear_down
from flows.stack_ref import LoadedStack, StackRef, load_stack
from tasks.clock import Clock, clock_from_env
from tasks.gateways.kube import RAY_SERVICE

# Flow run states after which the resources of that run have no owner left to take them down.
DEAD_RUN_STATES = {"FAILED", "CRASHED", "CANCELLED", "CANCELLING"}
# Wall seconds the janitor waits for a stack's lock before leaving it to the next sweep: the holder is
# a spin-up, spin-down or redeploy of that stack, which owns its resources while it runs.
LOCK_WAIT_S = 5


@dataclass(frozen=True)
class Verdict:
    reclaim: bool
    reason: str


def judge(labels: dict[str, str], *, now_s: float, run_state: str | None) -> Verdict:
    """Decide whether an owned resource is reclaimed (pure). `run_state` is the state type of the run
    named in its labels: None when no run is named, "UNKNOWN" when Prefect does not know it."""
    expiry = labels.get(owner.LEASE_EXPIRY_KEY, "")
    if expiry.isdigit() and int(expiry) <= now_s:
        return Verdict(True, f"lease expired {now_s - int(expiry):.0f}s ago")
    if run_state in DEAD_RUN_STATES:
        return Verdict(True, f"its spin-up run ended {run_state}")
    if run_state == "UNKNOWN":
        return Verdict(True, f"its run {labels.get(owner.RUN_ID_KEY)} is unknown to this Prefect server")
    return Verdict(False, "lease valid" + (f", run {run_state}" if run_state else ""))


@flow(name="llm-janitor")
def janitor(stacks: list[StackRef] = Field(
                description="stacks whose projects and locations to sweep (their policies apply)"),
            dry_run: StrictBool = Field(False, description="report what would be torn down, touch nothing"),
            other_stacks: StrictBool = Field(
                False, description="also reclaim our resources of stacks not named here (by their labels)"),
            ) -> dict[str, Any]:
    """Sweep every scope of `stacks`; tear down owned resources past their lease or orphaned.

    Resources of stacks not named in `stacks` are reported and left alone unless `other_stacks`."""
    clock, log = clock_from_env(), get_run_logger()
    known = [load_stack(ref) for ref in stacks]
    findings: list[dict[str, Any]] = []
    for scope in _scopes(known):
        conn = Connections(scope, clock)
        for cluster in conn.gke.list_clusters(scope.spec.cluster.project, scope.spec.cluster.location):
            finding = _sweep_cluster(conn, cluster, known, clock=clock, dry_run=dry_run, other_stacks=other_stacks)
            if finding:
                log.info("%s", finding)
                findings.append(finding)
    return {"swept": len(findings), "findings": findings,
            "reclaimed": sum(1 for f in findings if f["action"] == "reclaimed")}


def _scopes(known: list[LoadedStack]) -> list[LoadedStack]:
    """One stack per (endpoint, project, location): its credentials reach that scope."""
    seen: dict[tuple, LoadedStack] = {}
    for stack in known:
        c = stack.spec.cluster
        seen.setdefault((c.api_endpoint, c.project, c.location), stack)
    return list(seen.values())


def _sweep_cluster(conn: Connections, cluster, known: list[LoadedStack], *, clock: Clock,
                   dry_run: bool, other_stacks: bool) -> dict[str, Any] | None:
    labels = dict(cluster.resource_labels)
    if not owner.is_ours(labels):
        return None  # not ours: never looked at again, never touched
    stack = labels.get(owner.STACK_KEY, "")
    if not other_stacks and stack not in {k.spec.name for k in known}:
        return {"cluster": cluster.name, "stack": stack, "action": "left alone",
                "reason": f"stack {stack!r} is not one of the janitor's stacks (set other_stacks to sweep it)"}
    verdict = _judge_now(labels, clock)
    finding = {"cluster": cluster.name, "stack": stack, "reason": verdict.reason, "action": "kept"}
    if not verdict.reclaim:
        return finding
    if dry_run:
        return {**finding, "action": "would reclaim"}
    try:
        with stack_lock(stack, timeout_s=LOCK_WAIT_S):
            return _reclaim_locked(conn, cluster.name, known, stack=stack, clock=clock)
    except TimeoutError:
        return {**finding, "action": "busy",
                "reason": f"{verdict.reason}, but a spin-up, spin-down or redeploy of stack {stack!r} holds its "
                          f"lock (waited {LOCK_WAIT_S}s): left to it, the next sweep looks again"}


def _reclaim_locked(conn: Connections, cluster_name: str, known: list[LoadedStack], *, stack: str,
                    clock: Clock) -> dict[str, Any]:
    """Re-judge the cluster under the stack's lock and reclaim it if it still must go.

    The lock's previous holder may have torn the stack down, or started a new run that relabelled it."""
    policy_known, spec = _spec_for(conn.stack.spec, known, stack=stack, cluster_name=cluster_name)
    cluster = conn.gke.get_cluster(_ref(spec))
    if cluster is None:
        return {"cluster": cluster_name, "stack": stack, "action": "gone", "reason": "deleted meanwhile"}
    labels = dict(cluster.resource_labels)
    verdict = _judge_now(labels, clock)
    finding = {"cluster": cluster_name, "stack": stack, "reason": verdict.reason, "action": "kept"}
    if not verdict.reclaim:
        return finding
    pools = [p.name for p in conn.gke.list_node_pools(_ref(spec)) if owner.is_ours(dict(p.config.resource_labels), stack)]
    errors = _reclaim(conn, spec, pools, clock=clock,
                      delete_cluster_too=spec.lifecycle.delete_cluster_on_teardown or not policy_known)
    return {**finding, "action": "reclaimed" if not errors else "failed", "pools": pools, "errors": errors}


def _judge_now(labels: dict[str, str], clock: Clock) -> Verdict:
    """Judge the labels now, with the state of the run they name read from the Prefect API."""
    return judge(labels, now_s=clock.time(), run_state=_run_state(labels.get(owner.RUN_ID_KEY)))


def _spec_for(scope: StackSpec, known: list[LoadedStack], *, stack: str, cluster_name: str) -> tuple[bool, StackSpec]:
    """The spec to tear down with: the named stack's own, else the scope's with the found names."""
    for loaded in known:
        if loaded.spec.name == stack and loaded.spec.cluster.name == cluster_name:
            return True, loaded.spec
    return False, scope.updated({"name": stack, "cluster": {"name": cluster_name}})


def _reclaim(conn: Connections, spec: StackSpec, pools: list[str], *, clock: Clock,
             delete_cluster_too: bool) -> list[str]:
    """Tear down every owned RayService and GPU pool of the cluster, then the cluster if asked."""
    errors: list[str] = []
    targets = [spec.updated({"gpu_pool": {"name": p}}) for p in pools] or [spec]
    for service in _owned_ray_services(conn, spec):
        targets.insert(0, spec.updated({"serving": {"ray_service_name": service[1], "namespace": service[0]}}))
    for i, target in enumerate(targets):
        last = i == len(targets) - 1
        sub = Connections(LoadedStack(target, conn.stack.gcp_credentials), clock)
        try:
            tear_down(sub, clock=clock, delete_cluster_too=delete_cluster_too and last)
        except GkeLlmFlowsError as e:
            errors.append(str(e))
    return errors


def _owned_ray_services(conn: Connections, spec: StackSpec) -> list[tuple[str, str]]:
    sub = Connections(LoadedStack(spec, conn.stack.gcp_credentials), conn.clock)
    kube = sub.kube()
    if kube is None:
        return []
    selector = f"{owner.MANAGED_BY_KEY}={owner.MANAGED_BY_VALUE},{owner.STACK_KEY}={spec.name}"
    items = kube.list(RAY_SERVICE, None, label_selector=selector).items
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]


def _ref(spec: StackSpec):
    from tasks.cluster import cluster_ref

    return cluster_ref(spec)


def _run_state(run_id: str | None) -> str | None:
    """The state type of Prefect flow run `run_id` ("UNKNOWN" if the server has no such run)."""
    if not run_id:
        return None
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return "UNKNOWN"
    return run.state.type.value if run.state else "UNKNOWN"

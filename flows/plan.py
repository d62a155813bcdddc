"""Dry run: what a spin-up or spin-down would create, change or delete, from reads only.

`plan_spin_up` and `plan_spin_down` observe the live cluster, GPU pool, KubeRay operator and
RayService with GET requests and run the same pure planners the tasks use (`plan_cluster`,
`plan_node_pool`, `plan_operator`, owner checks). They never write: no create, update, delete, nor
server-side dry-run apply (that is a PATCH, and a plan must not even look like a write). A resource
that is not ours is reported as refused, with the reason the real run would give.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.errors import GkeLlmFlowsError, NotOursError
from blocks.labels import is_ours
from blocks.render_rayservice import ray_service_manifest
from flows.connections import Connections
from flows.stack_ref import LoadedStack
from tasks.capacity import placement_of, plan_placements
from tasks.cluster import check_no_foreign_pools, check_owner, cluster_ref, desired_cluster, plan_cluster
from tasks.gateways.kube import RAY_SERVICE, SECRET, KubeApi, resource_of
from tasks.gke_operations import Action
from tasks.kuberay_operator import is_subset, plan_operator, render_operator_manifests
from tasks.node_pool import desired_node_pool, plan_node_pool


@dataclass(frozen=True)
class Change:
    """One planned step: which resource, what would happen to it (create, update, delete, keep,
    wait, recreate, refuse) and why."""

    resource: str
    name: str
    action: str
    reason: str

    def line(self) -> str:
        return f"{self.action:>8}  {self.resource} {self.name}: {self.reason}"


def plan_spin_up(conn: Connections) -> list[Change]:
    """Return what `serve_llm` would do to each resource now. Reads only; raises nothing for foreign
    resources (they come back as `refuse`)."""
    spec = conn.stack.spec
    ref = cluster_ref(spec)
    live_cluster = conn.gke.get_cluster(ref)
    changes = [_decide("cluster", ref.path, lambda: plan_cluster(
        live_cluster, desired_cluster(spec), stack=spec.name, adopt_existing=spec.cluster.adopt_existing))]
    live_pool = conn.gke.get_node_pool(ref, spec.gpu_pool.name) if live_cluster else None
    placements = plan_placements(spec)
    first = placements[placement_of(live_pool, placements)]
    changes.append(_decide("node pool", ref.node_pool_path(spec.gpu_pool.name), lambda: plan_node_pool(
        live_pool, desired_node_pool(spec, zone=first.zone, capacity_mode=first.mode), stack=spec.name),
        note=f" ({first}; {len(placements)} placement(s) to try)"))
    kube = conn.kube() if live_cluster else None
    return changes + _plan_in_cluster(kube, conn.stack)


def _decide(resource: str, name: str, planner, *, note: str = "") -> Change:
    """Run a pure planner and turn its plan (or its refusal) into a Change."""
    try:
        plan = planner()
    except NotOursError as e:
        return Change(resource, name, "refuse", str(e))
    except GkeLlmFlowsError as e:
        return Change(resource, name, "fail", f"{type(e).__name__}: {e}")
    action = {Action.NOOP: "keep"}.get(plan.action, plan.action.value)
    diff = f" [{', '.join(plan.diff)}]" if plan.diff else ""
    return Change(resource, name, action, f"{plan.reason}{diff}{note}")


def _plan_in_cluster(kube: KubeApi | None, stack: LoadedStack) -> list[Change]:
    spec, s = stack.spec, stack.spec.serving
    service = f"{s.namespace}/{s.ray_service_name}"
    if kube is None:
        why = "the cluster does not exist yet (created first)"
        changes = [Change("kuberay operator", f"v{spec.operator.version}", "create", why),
                   Change("rayservice", service, "create", why)]
        if stack.hf_token is not None:
            changes.insert(1, Change("secret", f"{s.namespace}/{s.hf_token_secret_name}", "create",
                                     "HF token (value not shown)"))
        return changes
    rendered = render_operator_manifests(spec.operator.version, spec.operator.namespace, stack=spec.name)
    live = [kube.get(resource_of(o), o["metadata"]["name"], o["metadata"].get("namespace")) for o in rendered]
    try:
        todo = plan_operator(rendered, live, adopt_existing=spec.cluster.adopt_existing)
        op = Change("kuberay operator", f"v{spec.operator.version}", "apply" if todo else "keep",
                    f"{len(todo)} of {len(rendered)} object(s) absent or different" if todo else "installed as wanted")
    except NotOursError as e:
        op = Change("kuberay operator", f"v{spec.operator.version}", "refuse", str(e))
    changes = [op]
    if stack.hf_token is not None:
        changes.append(_plan_secret(kube, spec))
    changes.append(_plan_ray_service(kube, spec, hf_token=stack.hf_token is not None))
    return changes


def _plan_secret(kube: KubeApi, spec) -> Change:
    s = spec.serving
    name = f"{s.namespace}/{s.hf_token_secret_name}"
    live = kube.get(SECRET, s.hf_token_secret_name, s.namespace)
    if live is None:
        return Change("secret", name, "create", "HF token (value not shown)")
    if not is_ours((live.get("metadata") or {}).get("labels"), spec.name):
        return Change("secret", name, "refuse", "exists and is not ours; the spin-up would refuse to overwrite it")
    return Change("secret", name, "apply", "HF token, written only if it changed (value not shown)")


def _plan_ray_service(kube: KubeApi, spec, *, hf_token: bool) -> Change:
    s = spec.serving
    name = f"{s.namespace}/{s.ray_service_name}"
    live = kube.get(RAY_SERVICE, s.ray_service_name, s.namespace)
    if live is None:
        return Change("rayservice", name, "create", f"model {s.model_source} as {s.model_id!r}")
    labels = (live.get("metadata") or {}).get("labels")
    if not is_ours(labels, spec.name):
        return Change("rayservice", name, "refuse", f"labels {labels or {}} do not say stack {spec.name!r} "
                      "manages it; the spin-up would refuse to change it")
    wanted = ray_service_manifest(spec, hf_token=hf_token)
    if is_subset(wanted["spec"], live.get("spec") or {}):
        return Change("rayservice", name, "keep", "matches the spec")
    return Change("rayservice", name, "update", "its spec differs from the stack's (the server decides in "
                  "place or new Ray cluster at run time)")


def plan_spin_down(conn: Connections, *, delete_cluster_too: bool) -> list[Change]:
    """Return what `teardown_llm` would delete now (RayService, GPU pool, cluster if asked). Reads only."""
    spec = conn.stack.spec
    ref = cluster_ref(spec)
    live_cluster = conn.gke.get_cluster(ref)
    if live_cluster is None:
        return [Change("cluster", ref.path, "absent", "nothing to tear down")]
    kube, s = conn.kube(), spec.serving
    changes = []
    live_service = kube.get(RAY_SERVICE, s.ray_service_name, s.namespace) if kube else None
    changes.append(_delete_or_refuse("rayservice", f"{s.namespace}/{s.ray_service_name}", live_service and
                                     (live_service.get("metadata") or {}).get("labels"), spec.name,
                                     exists=live_service is not None))
    pool = conn.gke.get_node_pool(ref, spec.gpu_pool.name)
    changes.append(_delete_or_refuse("node pool", ref.node_pool_path(spec.gpu_pool.name),
                                     pool and dict(pool.config.resource_labels), spec.name, exists=pool is not None))
    if delete_cluster_too:
        change = _delete_or_refuse("cluster", ref.path, dict(live_cluster.resource_labels), spec.name, exists=True)
        try:
            if change.action == "delete":
                check_no_foreign_pools(live_cluster, spec.name)   # deleting it would delete them too
        except NotOursError as e:
            change = Change("cluster", ref.path, "refuse", str(e))
        changes.append(change)
    else:
        changes.append(Change("cluster", ref.path, "keep", "the policy keeps the cluster "
                              "(lifecycle.delete_cluster_on_teardown or --delete-cluster to delete it)"))
    return changes


def _delete_or_refuse(resource: str, name: str, labels, stack: str, *, exists: bool) -> Change:
    if not exists:
        return Change(resource, name, "absent", "already gone")
    try:
        check_owner(resource, name.rsplit("/", 1)[-1], dict(labels or {}), stack)
    except NotOursError as e:
        return Change(resource, name, "refuse", str(e))
    return Change(resource, name, "delete", f"owned by stack {stack!r}")


def format_plan(title: str, changes: list[Change]) -> str:
    """The plan as text: a title, one line per resource, and a count of what would change."""
    writes = [c for c in changes if c.action not in ("keep", "absent")]
    return "\n".join([title, *(c.line() for c in changes),
                      f"{len(writes)} change(s) planned; nothing was done (dry run)"])

"""Apply the stack's RayService (and HF token Secret) safely, and delete it completely.

KubeRay treats RayService spec changes differently (reference/kuberay.md section 3): a change to
`serveConfigV2` alone is applied in place to the running Ray cluster; worker replica counts (and, in
v1.7.0, pod tolerations) are updated in place too; any other `rayClusterConfig` change makes KubeRay
build a second Ray cluster beside the first (blue/green) and switch over once it serves. For a
16-GPU model that second cluster needs another 16 GPUs, which usually do not exist, so the pending
cluster would sit Pending forever. `plan_ray_service` therefore refuses such a change unless
`serving.allow_cluster_recreate` is set.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from blocks.errors import DriftError, NotOursError, only_transient_errors
from blocks.labels import LEASE_EXPIRY_KEY, RUN_ID_KEY, is_ours, owner_labels
from blocks.render_rayservice import hf_token_secret_manifest, ray_service_manifest
from blocks.spec import StackSpec
from tasks.clock import Clock, SystemClock
from tasks.gateways.kube import NAMESPACE, POD, RAY_CLUSTER, RAY_SERVICE, SECRET, KubeApi
from tasks.kuberay_operator import is_subset
from tasks.waiting import Look, State, wait_until_ready

log = logging.getLogger(__name__)

ORIGIN_LABEL = "ray.io/originated-from-cr-name"
# rayClusterConfig paths KubeRay v1.7.0 updates on the existing cluster (its spec hash ignores them).
IN_PLACE_CLUSTER_PATHS = (
    re.compile(r"^spec\.rayClusterConfig\.workerGroupSpecs\[\d+\]\.(replicas|minReplicas|maxReplicas)$"),
    re.compile(r"^spec\.rayClusterConfig\.workerGroupSpecs\[\d+\]\.scaleStrategy(\..*)?$"),
    re.compile(r"^spec\.rayClusterConfig\.(headGroupSpec|workerGroupSpecs\[\d+\])\.template\.spec\.tolerations.*$"),
)


class Action(str, Enum):
    CREATE = "create"
    NOOP = "noop"
    UPDATE_IN_PLACE = "update-in-place"        # serveConfigV2, metadata, replicas: same Ray cluster
    NEW_CLUSTER = "new-cluster"                # blue/green: KubeRay builds a second cluster
    RECREATE = "recreate"                      # upgradeStrategy None: delete, then create


@dataclass(frozen=True)
class RayServicePlan:
    action: Action
    changed_paths: list[str] = field(default_factory=list)


@dataclass
class RayServiceResult:
    name: str
    namespace: str
    action: Action
    changed_paths: list[str] = field(default_factory=list)
    secret_applied: bool = False
    generation: int | None = None


def changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Return the paths whose value differs between `before` and `after` (added, removed or changed). Pure."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for key in sorted(set(before) | set(after), key=str)
                for p in (changed_paths(before[key], after[key], f"{path}.{key}" if path else key)
                          if key in before and key in after else [f"{path}.{key}" if path else key])]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after, strict=True))
                for p in changed_paths(b, a, f"{path}[{i}]")]
    return [] if before == after else [path]


def _owned_view(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a RayService a spec decides: its spec and its labels."""
    return {"metadata": {"labels": (obj.get("metadata") or {}).get("labels") or {}}, "spec": obj.get("spec") or {}}


def plan_ray_service(live: dict[str, Any] | None, applied: dict[str, Any] | None, *, stack: str,
                     allow_cluster_recreate: bool, gpus_per_cluster: int) -> RayServicePlan:
    """Decide how to go from `live` to `applied` (the API server's dry-run of our apply). Pure.

    Comparing with the dry-run result rather than with our manifest lets the server fill in its
    defaults and drop fields we no longer set (e.g. the HF token env when the token is removed).
    Raises NotOursError when a RayService of that name exists without our owner labels for `stack`,
    DriftError for a change that would build a second Ray cluster unless `allow_cluster_recreate`.
    """
    if live is None:
        return RayServicePlan(Action.CREATE)
    meta = live.get("metadata") or {}
    if not is_ours(meta.get("labels"), stack):
        raise NotOursError(f"RayService {meta.get('namespace')}/{meta.get('name')} exists but its labels "
                           f"{meta.get('labels') or {}} do not say stack {stack!r} manages it; refusing to "
                           "change it (rename serving.ray_service_name, or delete it yourself)")
    paths = changed_paths(_owned_view(live), _owned_view(applied or {}))
    if not paths:
        return RayServicePlan(Action.NOOP)
    cluster = [p for p in paths if p.startswith("spec.rayClusterConfig")
               and not any(rx.match(p) for rx in IN_PLACE_CLUSTER_PATHS)]
    if not cluster:
        return RayServicePlan(Action.UPDATE_IN_PLACE, paths)
    if not allow_cluster_recreate:
        raise DriftError(
            f"RayService {meta.get('namespace')}/{meta.get('name')}: the change to {sorted(cluster)} is not "
            "a Serve-config change; KubeRay would build a second Ray cluster beside the running one and "
            f"switch over when it serves, which needs twice the GPUs ({2 * gpus_per_cluster} nvidia.com/gpu "
            f"instead of {gpus_per_cluster}) and reloads the model. Change only the Serve config, or set "
            "serving.allow_cluster_recreate=true (with upgrade_strategy 'None' the RayService is deleted and "
            "recreated instead, with downtime but no extra GPUs)")
    strategy = ((((applied or {}).get("spec") or {}).get("upgradeStrategy") or {}).get("type")
                or ((live.get("spec") or {}).get("upgradeStrategy") or {}).get("type"))
    return RayServicePlan(Action.RECREATE if strategy == "None" else Action.NEW_CLUSTER, paths)


@task(retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_ray_service(kube: KubeApi, spec: StackSpec, *, hf_token: str | SecretStr | None = None,
                       lease_expiry_epoch_s: int | None = None, run_id: str | None = None,
                       clock: Clock | None = None) -> RayServiceResult:
    """Make the RayService (and the HF token Secret, when a token is given) match `spec`.

    Idempotent: the same spec and labels make no write. A Serve-config-only change is applied in
    place. A Ray-cluster change is refused (DriftError) unless `serving.allow_cluster_recreate`.
    Without a lease or run id, the live RayService's are kept (a redeploy does not drop the lease).
    Raises NotOursError for a same-named RayService we do not own. The token is never logged.
    """
    s = spec.serving
    result = RayServiceResult(s.ray_service_name, s.namespace, Action.NOOP)
    _ensure_namespace(kube, s.namespace, spec.name)
    live = kube.get(RAY_SERVICE, s.ray_service_name, s.namespace)
    labels = _lease_labels(live, lease_expiry_epoch_s, run_id)
    if hf_token is not None:
        result.secret_applied = _ensure_secret(kube, hf_token_secret_manifest(spec, hf_token, **labels), spec.name)
    desired = ray_service_manifest(spec, hf_token=hf_token is not None, **labels)
    if live is not None and is_ours((live.get("metadata") or {}).get("labels"), spec.name):
        applied = kube.apply(desired, dry_run=True)        # what our apply would make of it; no write
    else:
        applied = None
    plan = plan_ray_service(live, applied, stack=spec.name, allow_cluster_recreate=s.allow_cluster_recreate,
                            gpus_per_cluster=s.worker_gpus * s.worker_replicas)
    result.action, result.changed_paths = plan.action, plan.changed_paths
    if plan.action is Action.RECREATE:
        delete_ray_service.fn(kube, spec, clock=clock)
    if plan.action is not Action.NOOP:
        live = kube.apply(desired)
    log.info("RayService %s/%s: %s%s", s.namespace, s.ray_service_name, plan.action.value,
             f" ({', '.join(plan.changed_paths[:8])})" if plan.changed_paths else "")
    result.generation = (live or {}).get("metadata", {}).get("generation")
    return result


def _lease_labels(live: dict[str, Any] | None, lease_expiry_epoch_s: int | None,
                  run_id: str | None) -> dict[str, Any]:
    """Return the lease and run labels to apply: the given ones, else those the live object carries."""
    have = ((live or {}).get("metadata") or {}).get("labels") or {}
    lease = have.get(LEASE_EXPIRY_KEY)
    if lease_expiry_epoch_s is None and lease and lease.isdigit():
        lease_expiry_epoch_s = int(lease)
    return {"lease_expiry_epoch_s": lease_expiry_epoch_s, "run_id": run_id or have.get(RUN_ID_KEY)}


def _ensure_namespace(kube: KubeApi, namespace: str, stack: str) -> None:
    """Create the serving namespace when it is missing (labelled ours; teardown leaves namespaces)."""
    if kube.get(NAMESPACE, namespace) is None:
        kube.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace, "labels": owner_labels(stack)}})
        log.info("Namespace %s created", namespace)


def _ensure_secret(kube: KubeApi, manifest: dict[str, Any], stack: str) -> bool:
    """Apply the token Secret unless it already holds exactly this token. Return True if written."""
    meta = manifest["metadata"]
    live = kube.get(SECRET, meta["name"], meta["namespace"])
    if live is not None and not is_ours((live.get("metadata") or {}).get("labels"), stack):
        raise NotOursError(f"Secret {meta['namespace']}/{meta['name']} exists and is not ours; refusing to "
                           "overwrite it (set serving.hf_token_secret_name to another name)")
    if live is not None and is_subset({"data": manifest["data"], "metadata": {"labels": meta["labels"]}}, live):
        return False
    kube.apply(manifest)
    log.info("Secret %s/%s (HF token) applied", meta["namespace"], meta["name"])
    return True


@task(retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def delete_ray_service(kube: KubeApi, spec: StackSpec, *, clock: Clock | None = None,
                       timeout_s: float | None = None, interval_s: float = 5.0) -> bool:
    """Delete the stack's RayService and wait until its RayClusters and their pods are gone.

    Returns True if a RayService was deleted, False if there was none (NotFound is success; leftover
    clusters and pods are still waited for). Raises NotOursError for a RayService we do not own,
    WaitTimedOut after `timeout_s` (default `spec.timeouts.delete_s`).
    """
    s = spec.serving
    live = kube.get(RAY_SERVICE, s.ray_service_name, s.namespace)
    if live is not None and not is_ours((live.get("metadata") or {}).get("labels"), spec.name):
        raise NotOursError(f"RayService {s.namespace}/{s.ray_service_name} is not labelled as managed by stack "
                           f"{spec.name!r}; refusing to delete it")
    deleted = live is not None and kube.delete(RAY_SERVICE, s.ray_service_name, s.namespace)
    log.info("RayService %s/%s: %s; waiting for its Ray clusters and pods to go", s.namespace,
             s.ray_service_name, "delete requested" if deleted else "already gone")
    wait_until_ready(lambda: _leftovers_look(kube, s.ray_service_name, s.namespace),
                     what=f"deleting RayService {s.namespace}/{s.ray_service_name}",
                     timeout_s=timeout_s or spec.timeouts.delete_s, interval_s=interval_s,
                     clock=clock or SystemClock(), log=log)
    return deleted


def _leftovers_look(kube: KubeApi, name: str, namespace: str) -> Look:
    left = []
    if (live := kube.get(RAY_SERVICE, name, namespace)) is not None:
        finalizers = (live.get("metadata") or {}).get("finalizers") or []
        # The operator removes its finalizer; if it stays, the operator is not running.
        left.append(f"RayService {name}" + (f" (finalizers {finalizers}: is the KubeRay operator running?)"
                                            if finalizers else ""))
    clusters = kube.list(RAY_CLUSTER, namespace, label_selector=f"{ORIGIN_LABEL}={name}").items
    left += [f"RayCluster {c['metadata']['name']}" for c in clusters]
    names = {c["metadata"]["name"] for c in clusters} | _cluster_names_of_pods(kube, namespace, name)
    if names:
        selector = f"ray.io/cluster in ({','.join(sorted(names))})"
        pods = kube.list(POD, namespace, label_selector=selector).items
        left += [f"{len(pods)} pod(s)"] if pods else []
    if left:
        return Look(State.PROGRESSING, "still there: " + ", ".join(left))
    return Look(State.READY, "RayService, Ray clusters and pods are gone")


def _cluster_names_of_pods(kube: KubeApi, namespace: str, name: str) -> set[str]:
    """Cluster names of pods whose cluster object is already gone (names are `<rayservice>-<5 chars>`)."""
    pods = kube.list(POD, namespace, label_selector="ray.io/cluster").items
    pattern = re.compile(rf"^{re.escape(name)}-[a-z0-9]{{5}}$")
    return {c for p in pods if (c := ((p.get("metadata") or {}).get("labels") or {}).get("ray.io/cluster"))
            and pattern.match(c)}

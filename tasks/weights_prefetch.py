"""Apply and delete the weights-prefetch DaemonSet (blocks/render_prefetch.py).

The prefetch is an optimisation, never a gate: nothing waits for it. The Ray workers share its cache,
so whatever it has copied when they start is not downloaded again, and a prefetch that fails or is
slow leaves them downloading as they would without it. Its pods run on the GPU nodes and go with
them; the DaemonSet itself bills nothing, but the teardown deletes it so a stack leaves nothing behind.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.errors import NotOursError, only_transient_errors
from blocks.labels import is_ours
from blocks.render_prefetch import prefetch_applies, prefetch_name, weights_prefetch_manifest
from blocks.spec import StackSpec
from tasks.gateways.kube import DAEMON_SET, KubeApi
from tasks.kuberay_operator import is_subset

log = logging.getLogger(__name__)


@task(retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_weights_prefetch(kube: KubeApi, spec: StackSpec, *, hf_token: bool = False) -> str:
    """Make the prefetch DaemonSet match `spec`; delete it when it does not apply (`prefetch_applies`:
    `serving.prefetch_weights` off, or a gs:// source).

    Returns "created", "updated", "unchanged", "deleted" or "absent". Idempotent: the same spec makes
    no write. `hf_token` says whether the token Secret exists (gated repos). Raises NotOursError for a
    same-named DaemonSet we do not own.
    """
    name, namespace = prefetch_name(spec), spec.serving.namespace
    live = _owned(kube, spec, name, namespace)
    if not prefetch_applies(spec):
        if live is None:
            return "absent"
        kube.delete(DAEMON_SET, name, namespace)
        log.info("DaemonSet %s/%s deleted (no prefetch for %s)", namespace, name, spec.serving.model_source)
        return "deleted"
    desired = weights_prefetch_manifest(spec, hf_token=hf_token)
    if live is not None and is_subset(desired, live):
        return "unchanged"
    kube.apply(desired)
    action = "created" if live is None else "updated"
    log.info("DaemonSet %s/%s %s: prefetching %s onto the GPU nodes", namespace, name, action,
             spec.serving.model_source)
    return action


@task(retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def delete_weights_prefetch(kube: KubeApi, spec: StackSpec) -> bool:
    """Delete the stack's prefetch DaemonSet; True if one was deleted, False if there was none.

    Does not wait for its pods: they hold no GPU and go with the GPU nodes. Raises NotOursError for a
    same-named DaemonSet we do not own.
    """
    name, namespace = prefetch_name(spec), spec.serving.namespace
    if _owned(kube, spec, name, namespace) is None:
        return False
    deleted = kube.delete(DAEMON_SET, name, namespace)
    log.info("DaemonSet %s/%s: %s", namespace, name, "deleted" if deleted else "already gone")
    return bool(deleted)


def read_weights_prefetch(kube: KubeApi, spec: StackSpec) -> dict[str, Any] | None:
    """What the stack's prefetch DaemonSet reports: the source it copies, on how many GPU nodes, and
    on how many the copy is complete (its pods are Ready only then). None when there is none. Read-only."""
    live = kube.get(DAEMON_SET, prefetch_name(spec), spec.serving.namespace)
    if live is None:
        return None
    status = live.get("status") or {}
    env = (((live.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers", [{}])[0].get("env")
    source = next((e.get("value") for e in env or [] if e.get("name") == "PREFETCH_SOURCE"), None)
    return {"source": source, "gpu_nodes": status.get("desiredNumberScheduled") or 0,
            "complete_on": status.get("numberReady") or 0}


def _owned(kube: KubeApi, spec: StackSpec, name: str, namespace: str) -> dict[str, Any] | None:
    live = kube.get(DAEMON_SET, name, namespace)
    if live is not None and not is_ours((live.get("metadata") or {}).get("labels"), spec.name):
        raise NotOursError(f"DaemonSet {namespace}/{name} exists but is not labelled as managed by stack "
                           f"{spec.name!r}; refusing to change it (rename serving.ray_service_name, or set "
                           "serving.prefetch_weights=false)")
    return live

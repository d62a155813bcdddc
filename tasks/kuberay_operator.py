"""Install (or upgrade in place) the pinned KubeRay operator from the vendored upstream manifests.

No helm and no kustomize binary, so it runs on any Prefect worker: the manifests in
`third_party/kuberay/v<version>/` are read unmodified and the default overlay's transformations are
done here (namespace, including the ClusterRoleBinding's ServiceAccount subject; the operator image;
the common labels). Everything is applied with server-side apply, because the CRDs (0.77-1.39 MB) are
too large for the last-applied annotation of client-side apply.

We add three things to what upstream renders: our owner labels (`metadata.labels` only, never selectors,
which are immutable), a required node affinity that keeps the operator off GPU nodes, and on each CRD
an annotation with the SHA-256 of what we apply. The CRDs are about 1.35 MB of JSON; with the
annotation, a warm cluster is checked with one metadata-only list (a few kB) instead of reading them
whole: a CRD whose annotation matches and that no other field manager wrote since is as we want it. GKE taints
GPU nodes only in some creation orders (reference/gke.md section 8), and an operator scheduled there
would be evicted when the GPU pool is torn down, and would hold a $90/hour node's CPU for a 100m pod.
We add no tolerations, so a tainted GPU node repels it too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.errors import NotOursError, PermanentError, only_transient_errors
from blocks.labels import MANAGED_BY_KEY, MANAGED_BY_VALUE, is_ours, owner_labels
from blocks.spec import StackSpec
from tasks.clock import Clock, SystemClock
from tasks.gateways.kube import CRD, DEPLOYMENT, FIELD_MANAGER, POD, KubeApi, describe, resource_of
from tasks.ray_service_readiness import fatal_pod_sign
from tasks.waiting import Look, State, wait_until_ready

log = logging.getLogger(__name__)

OPERATOR_NAME = "kuberay-operator"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
VENDOR_ENV = "GKE_LLM_FLOWS_KUBERAY_DIR"   # optional override of third_party/kuberay
DEFAULT_VENDOR_ROOT = Path(__file__).resolve().parents[1] / "third_party" / "kuberay"
OVERLAY = Path("ray-operator/config/default")
# The kustomization keys this renderer understands; anything else in a future version must fail
# loudly rather than render something different from what kustomize would.
SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "labels"}
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace"}
ADOPT_KINDS = ("Deployment", "CustomResourceDefinition")     # what says "a KubeRay operator is installed"
PREEXISTING_NAMESPACES = {"default", "kube-system", "kube-public"}
# On each CRD we apply: SHA-256 of the rendered CRD without this annotation (hex).
MANIFEST_HASH_KEY = "gke-llm-flows/manifest-sha256"
APPLY_ORDER = ["CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Role",
               "ClusterRoleBinding", "RoleBinding", "Service", "Deployment"]


@dataclass
class OperatorResult:
    """What `ensure_kuberay_operator` did: objects written and objects already as wanted."""

    version: str
    namespace: str
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def vendored_dir(version: str, root: Path | None = None) -> Path:
    """Return the directory of the vendored manifests for `version`; PermanentError if absent."""
    root = Path(root or os.environ.get(VENDOR_ENV) or DEFAULT_VENDOR_ROOT)
    path = root / f"v{version}"
    if not (path / OVERLAY / "kustomization.yaml").is_file():
        have = sorted(p.name[1:] for p in root.glob("v*") if p.is_dir()) if root.is_dir() else []
        raise PermanentError(f"operator.version {version!r}: no vendored KubeRay manifests at {path}; "
                             f"vendored versions: {have or 'none'} (add third_party/kuberay/v{version}/ "
                             "from the upstream tag, or set operator.version to one of those)")
    return path


def render_operator_manifests(version: str, namespace: str, *, stack: str,
                              root: Path | None = None) -> list[dict[str, Any]]:
    """Render the operator install for `version` into `namespace`, in apply order. Pure file reads.

    The overlay's own namespace (`default`) is replaced by `namespace`, as `kustomize edit set
    namespace` would; the ClusterRoleBinding's subject follows it.
    """
    base = vendored_dir(version, root)
    return [json.loads(text) for _, _, text in _rendered_texts(base, namespace, stack, _signature(base))]


@functools.lru_cache(maxsize=16)
def _rendered_texts(base: Path, namespace: str, stack: str, signature: tuple) -> tuple[tuple[str, str, str], ...]:
    """The rendered objects as JSON texts, cached per vendored files' state (`signature`): rendering
    and hashing the CRDs costs a noticeable fraction of a second, and every spin-up checks them."""
    objects = _render_kustomization(base / OVERLAY, base)
    if namespace not in PREEXISTING_NAMESPACES:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for obj in objects:
        _set_namespace(obj, namespace)
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(owner_labels(stack))
        if obj.get("kind") == "Deployment":
            _keep_off_gpu_nodes(obj)
        if obj.get("kind") == "CustomResourceDefinition":
            obj["metadata"].setdefault("annotations", {})[MANIFEST_HASH_KEY] = manifest_hash(obj)
    return tuple((obj["kind"], obj["metadata"]["name"], json.dumps(obj)) for obj in _ordered(objects))


@functools.lru_cache(maxsize=16)
def _crd_hashes(base: Path, namespace: str, stack: str, signature: tuple) -> tuple[tuple[str, str], ...]:
    """(name, our hash annotation) of each rendered CRD."""
    return tuple((name, json.loads(text)["metadata"]["annotations"][MANIFEST_HASH_KEY])
                 for kind, name, text in _rendered_texts(base, namespace, stack, signature)
                 if kind == "CustomResourceDefinition")


def _signature(base: Path) -> tuple:
    """What identifies the vendored files' content cheaply: each file's path, size and mtime."""
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in sorted(base.rglob("*"))
                 if p.is_file() and (st := p.stat()))


def manifest_hash(obj: dict[str, Any]) -> str:
    """SHA-256 (hex) of `obj` as canonical JSON, leaving out our own hash annotation. Pure."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != MANIFEST_HASH_KEY}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _render_kustomization(directory: Path, root: Path) -> list[dict[str, Any]]:
    """Apply the subset of kustomize the upstream overlay uses: resources, namespace, images, labels."""
    config = _load_yaml_docs(directory / "kustomization.yaml", root)[0]
    unknown = set(config) - SUPPORTED_KUSTOMIZE_KEYS
    if unknown:
        raise PermanentError(f"{directory.relative_to(root)}/kustomization.yaml uses {sorted(unknown)}, which "
                             f"this renderer does not implement (supported: {sorted(SUPPORTED_KUSTOMIZE_KEYS)})")
    objects: list[dict[str, Any]] = []
    for entry in config.get("resources") or []:
        target = (directory / entry).resolve()
        objects += (_render_kustomization(target, root) if target.is_dir()
                    else _load_yaml_docs(target, root))
    for label_set in config.get("labels") or []:
        for obj in objects:
            _add_labels(obj, label_set.get("pairs") or {}, selectors=bool(label_set.get("includeSelectors")))
    for image in config.get("images") or []:
        for obj in objects:
            _set_image(obj, image)
    if config.get("namespace"):
        for obj in objects:
            _set_namespace(obj, config["namespace"])
    return objects


def _load_yaml_docs(path: Path, root: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
        return json.loads(_parse_yaml_to_json(hashlib.sha256(data).hexdigest(), data))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise PermanentError(f"cannot read vendored manifest {path.relative_to(root)}: {e}") from e


@functools.lru_cache(maxsize=64)
def _parse_yaml_to_json(digest: str, data: bytes) -> str:
    """Parse once per file content: the CRDs are 4 MB of YAML (seconds to parse on a busy worker),
    and a JSON round trip gives each caller its own copy far faster than `copy.deepcopy`."""
    return json.dumps([doc for doc in yaml.load_all(data, Loader=_LOADER) if doc])


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # the C loader reads the 4 MB of CRDs in <1 s


def _add_labels(obj: dict[str, Any], pairs: dict[str, str], *, selectors: bool) -> None:
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if not selectors:
        return
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Deployment":
        spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    elif obj.get("kind") == "Service":
        spec.setdefault("selector", {}).update(pairs)


def _set_image(obj: dict[str, Any], image: dict[str, str]) -> None:
    pod_spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        name = container.get("image", "").split("@")[0].rsplit(":", 1)[0]
        if name == image.get("name"):
            container["image"] = f"{image.get('newName', name)}:{image['newTag']}" if image.get("newTag") \
                else image.get("newName", name)


def _set_namespace(obj: dict[str, Any], namespace: str) -> None:
    """Set the namespace as kustomize does, including ServiceAccount subjects of (Cluster)RoleBindings."""
    if obj.get("kind") not in CLUSTER_SCOPED:
        obj.setdefault("metadata", {})["namespace"] = namespace
    if obj.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def _keep_off_gpu_nodes(deployment: dict[str, Any]) -> None:
    pod_spec = deployment["spec"]["template"]["spec"]
    affinity = pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    required = affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    required.setdefault("nodeSelectorTerms", []).append(
        {"matchExpressions": [{"key": GPU_NODE_LABEL, "operator": "DoesNotExist"}]})


def _ordered(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {kind: i for i, kind in enumerate(APPLY_ORDER)}
    return sorted(objects, key=lambda o: rank.get(o.get("kind"), len(rank)))


def is_subset(wanted: Any, live: Any) -> bool:
    """True when every field set in `wanted` has the same value in `live` (server defaults ignored)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(live, list) and len(wanted) == len(live)
                and all(is_subset(w, v) for w, v in zip(wanted, live, strict=True)))
    return wanted == live


def plan_operator(rendered: list[dict[str, Any]], live: list[dict[str, Any] | None], *,
                  adopt_existing: bool = False) -> list[dict[str, Any]]:
    """Return the rendered objects that must be applied: absent, or differing in a field we set. Pure.

    Raises NotOursError when a KubeRay operator Deployment or CRD exists that we did not install
    (e.g. a Helm release), unless `adopt_existing`: taking it over would change someone else's setup.
    """
    foreign = [describe(have) for have in live if have is not None and have.get("kind") in ADOPT_KINDS
               and not is_ours((have.get("metadata") or {}).get("labels"))]
    if foreign and not adopt_existing:
        raise NotOursError(f"a KubeRay install we did not make is already in the cluster ({', '.join(foreign)}); "
                           "refusing to take it over. Remove it, or set cluster.adopt_existing=true to let "
                           "gke-llm-flows manage it from now on")
    return [want for want, have in zip(rendered, live, strict=True) if have is None or not is_subset(want, have)]


def crd_is_current(meta: dict[str, Any] | None, digest: str) -> bool:
    """True when a CRD's metadata says it holds what we applied as `digest` and nobody wrote it since:
    our hash annotation matches and no field manager but ours owns fields outside `status`. Pure."""
    if not meta or meta.get("deletionTimestamp") or not is_ours(meta.get("labels")):
        return False
    if (meta.get("annotations") or {}).get(MANIFEST_HASH_KEY) != digest:
        return False
    writers = {e.get("manager") for e in meta.get("managedFields") or [] if e.get("subresource") != "status"}
    return writers <= {FIELD_MANAGER}


def crds_current(kube: KubeApi, hashes: tuple[tuple[str, str], ...]) -> bool:
    """Whether every CRD of `hashes` ((name, digest) pairs) is live as we applied it: one
    metadata-only list of our CRDs, a few kB, instead of reading ~1.35 MB of them."""
    live = {m.get("name"): m for m in kube.list_metadata(CRD, label_selector=f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE}")}
    return all(crd_is_current(live.get(name), digest) for name, digest in hashes)


@task(retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors, cache_policy=NO_CACHE)
def ensure_kuberay_operator(kube: KubeApi, spec: StackSpec, *, clock: Clock | None = None,
                            vendor_root: Path | None = None) -> OperatorResult:
    """Make the cluster run the pinned KubeRay operator, then wait until it can serve RayServices.

    On return every CRD is Established and the Deployment is Available with the pinned image.
    Idempotent: when everything already matches, no write request is made, and CRDs that carry our
    hash annotation unchanged (`crds_current`) are not read whole. A changed `operator.version` is
    applied over the old objects (same names), i.e. upgraded in place.
    Raises PermanentError for a version that is not vendored, NotOursError for a KubeRay install we
    did not make (unless `cluster.adopt_existing`), RolloutFailed as soon as an operator pod cannot
    start (crash loop, image pull), WaitTimedOut if not ready in `spec.timeouts.operator_ready_s`.
    """
    clock = clock or SystemClock()
    version, namespace = spec.operator.version, spec.operator.namespace
    base = vendored_dir(version, vendor_root)
    key = (base, namespace, spec.name, _signature(base))
    texts, result = _rendered_texts(*key), OperatorResult(version, namespace)
    skip = set()
    if crds_current(kube, hashes := _crd_hashes(*key)):
        skip = {name for name, _ in hashes}
        result.unchanged += [f"CustomResourceDefinition {name}" for name in sorted(skip)]
    rendered = [json.loads(text) for kind, name, text in texts
                if not (kind == "CustomResourceDefinition" and name in skip)]
    live = [kube.get(resource_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace"))
            for obj in rendered]
    todo = {id(obj) for obj in plan_operator(rendered, live, adopt_existing=spec.cluster.adopt_existing)}
    for obj in rendered:
        if id(obj) in todo:
            kube.apply(obj)
            result.applied.append(describe(obj))
        else:
            result.unchanged.append(describe(obj))
    log.info("KubeRay operator v%s in %s: applied %d object(s), %d already as wanted",
             version, namespace, len(result.applied), len(result.unchanged))
    untouched = [have for want, have in zip(rendered, live, strict=True) if id(want) not in todo]
    wait_for_operator_ready(kube, rendered, clock=clock, timeout_s=spec.timeouts.operator_ready_s,
                            already_seen=untouched)
    return result


def wait_for_operator_ready(kube: KubeApi, rendered: list[dict[str, Any]], *, clock: Clock,
                            timeout_s: float, interval_s: float = 5.0,
                            already_seen: list[dict[str, Any] | None] = ()) -> Look:
    """Wait until every rendered CRD is Established and the Deployment Available at its generation.

    `already_seen` are live objects read moments ago and not written since: an Established CRD
    among them is not read again (each is about 1 MB).
    """
    crds = [o["metadata"]["name"] for o in rendered if o["kind"] == "CustomResourceDefinition"]
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    # A CRD stays Established; do not re-read 1 MB objects every look.
    established = {o["metadata"]["name"] for o in already_seen
                   if o and o.get("kind") == "CustomResourceDefinition" and _condition_true(o, "Established")}

    def probe() -> Look:
        for name in crds:
            if name in established:
                continue
            crd = kube.get(CRD, name)
            if crd is None or not _condition_true(crd, "Established"):
                return Look(State.PROGRESSING, f"CRD {name} not Established yet")
            established.add(name)
        meta = deployment["metadata"]
        look = _deployment_look(kube.get(DEPLOYMENT, meta["name"], meta["namespace"]), meta)
        if look.state is State.READY:
            return look
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        fatal = fatal_pod_sign(kube.list(POD, meta["namespace"], label_selector=selector).items)
        return Look(State.FATAL, f"the operator cannot start: {fatal}") if fatal else look

    return wait_until_ready(probe, what=f"KubeRay operator in {deployment['metadata']['namespace']}",
                            timeout_s=timeout_s, interval_s=interval_s, clock=clock, log=log)


def _deployment_look(live: dict[str, Any] | None, meta: dict[str, Any]) -> Look:
    where = f"Deployment {meta['namespace']}/{meta['name']}"
    if live is None:
        return Look(State.PROGRESSING, f"{where} not found yet")
    status = live.get("status") or {}
    if status.get("observedGeneration") != live["metadata"].get("generation"):
        return Look(State.PROGRESSING, f"{where}: controller has not seen generation "
                                       f"{live['metadata'].get('generation')} yet")
    wanted = (live.get("spec") or {}).get("replicas", 1)
    if (status.get("updatedReplicas") or 0) < wanted:
        return Look(State.PROGRESSING, f"{where}: {status.get('updatedReplicas') or 0} of {wanted} pod(s) updated")
    if not _condition_true(live, "Available"):
        return Look(State.PROGRESSING, f"{where} not Available yet")
    return Look(State.READY, f"{where} Available")


def _condition_true(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])

"""The resource types one simulated API server serves: the built-in kinds and, once their CRD is
Established, custom resources. Discovery, routing and validation all look types up here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube.store import ObjectStore, WatchEvent

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = True
    storage: tuple[str, str] | None = None     # store key when it differs from (group, plural)
    crd_name: str | None = None                # set for custom resources
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    deprecation_warning: str | None = None     # sent as a Warning header on every request, as the server does

    @property
    def key(self) -> tuple[str, str]:
        return self.storage or (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps`: how the real server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """`Pod`, `CustomResourceDefinition.apiextensions.k8s.io`: the kind in 'is invalid' messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _t(group: str, version: str, plural: str, kind: str, namespaced: bool = True, *short: str,
       status: bool = True, categories: tuple[str, ...] = (), storage: tuple[str, str] | None = None,
       ) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, kind.lower(), tuple(short), categories,
                        status, storage)


_ALL = ("all",)
BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t("", "v1", "namespaces", "Namespace", False, "ns"),
    _t("", "v1", "nodes", "Node", False, "no"),
    _t("", "v1", "pods", "Pod", True, "po", categories=_ALL),
    _t("", "v1", "services", "Service", True, "svc", categories=_ALL),
    _t("", "v1", "endpoints", "Endpoints", True, "ep", status=False),
    _t("", "v1", "secrets", "Secret", status=False),
    _t("", "v1", "configmaps", "ConfigMap", True, "cm", status=False),
    _t("", "v1", "serviceaccounts", "ServiceAccount", True, "sa", status=False),
    _t("", "v1", "events", "Event", True, "ev", status=False),
    _t("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "pvc"),
    _t("events.k8s.io", "v1", "events", "Event", True, "ev", status=False, storage=("", "events")),
    _t("apps", "v1", "deployments", "Deployment", True, "deploy", categories=_ALL),
    _t("apps", "v1", "replicasets", "ReplicaSet", True, "rs", categories=_ALL),
    _t("apps", "v1", "daemonsets", "DaemonSet", True, "ds", categories=_ALL),
    _t("apps", "v1", "statefulsets", "StatefulSet", True, "sts", categories=_ALL),
    _t("batch", "v1", "jobs", "Job", categories=_ALL),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role", status=False),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", status=False),
    _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, status=False),
    _t("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, status=False),
    _t("coordination.k8s.io", "v1", "leases", "Lease", status=False),
    _t("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", status=False),
    _t("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
       "crd", "crds"),
)

# Kinds served by the API server itself, without a controller behind them.
PREFERRED_GROUP_VERSIONS = {t.group: t.version for t in BUILTIN_TYPES}


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of `crd` as resource types, or [] unless it is Established."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        types.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            status_subresource="status" in (version.get("subresources") or {}),
            crd_name=crd["metadata"]["name"],
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            deprecation_warning=(version.get("deprecationWarning") or
                                 f"{spec['group']}/{version['name']} {names['kind']} is deprecated")
            if version.get("deprecated") else None))
    return types


class ResourceTypes:
    """Built-in types plus the custom types of Established CRDs, kept current from the store's feed."""

    def __init__(self, store: ObjectStore):
        self._lock = threading.Lock()
        self._custom: dict[str, list[ResourceType]] = {}     # CRD name -> its types
        self._crds: dict[str, dict[str, Any]] = {}           # CRD name -> the live CRD object
        with store._lock:  # noqa: SLF001 - read the current CRDs and subscribe with no gap between
            for crd in store.list(CRD_KEY)[0]:
                self._update(crd)
            store.subscribe(self._on_event)

    def _on_event(self, event: WatchEvent) -> None:
        if event.resource != CRD_KEY:
            return
        name = event.object["metadata"]["name"]
        if event.type == "DELETED":
            with self._lock:
                self._custom.pop(name, None)
                self._crds.pop(name, None)
        else:
            self._update(event.object)

    def _update(self, crd: dict[str, Any]) -> None:
        types = crd_types(crd)
        with self._lock:
            self._custom[crd["metadata"]["name"]] = types
            self._crds[crd["metadata"]["name"]] = crd

    def all(self) -> list[ResourceType]:
        with self._lock:
            custom = [t for types in self._custom.values() for t in types]
        return [*BUILTIN_TYPES, *custom]

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rtype in self.all():
            if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
                return rtype
        return None

    def group_versions(self, group: str) -> list[str]:
        """Versions served for `group`, preferred (first listed by the CRD, or the built-in) first."""
        versions: list[str] = []
        for rtype in self.all():
            if rtype.group == group and rtype.version not in versions:
                versions.append(rtype.version)
        return versions

    def crd(self, name: str) -> dict[str, Any] | None:
        """The live CRD object (shared; callers must not modify it)."""
        with self._lock:
            return self._crds.get(name)

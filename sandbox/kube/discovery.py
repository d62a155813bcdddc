"""Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/GROUP[/VERSION]`.

`kubectl` and client libraries find resources through these (legacy, non-aggregated discovery, which
kubectl falls back to when the server answers plain JSON). Custom resources appear once their CRD
is Established.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.kube.resources import ResourceType, ResourceTypes

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4-gke.1106006",
                  "gitCommit": "sandbox", "gitTreeState": "clean", "buildDate": "2025-05-01T00:00:00Z",
                  "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64"}

_STATUS_VERBS = ["get", "patch", "update"]
_PROXY_VERBS = ["create", "delete", "get", "patch", "update"]


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else, as Kubernetes orders versions."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), version)


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(types: ResourceTypes, group: str) -> dict[str, Any]:
    versions = sorted(types.group_versions(group), key=version_priority)
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(types: ResourceTypes) -> dict[str, Any]:
    groups: list[str] = []
    for rtype in types.all():
        if rtype.group and rtype.group not in groups:
            groups.append(rtype.group)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(types, g) for g in groups]}


def api_group(types: ResourceTypes, group: str) -> dict[str, Any] | None:
    if not types.group_versions(group):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(types, group)}


def _resource(rtype: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": rtype.plural, "singularName": rtype.singular, "namespaced": rtype.namespaced,
                             "kind": rtype.kind, "verbs": ["create", "delete", "deletecollection", "get", "list",
                                                           "patch", "update", "watch"]}
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    return entry


def resource_list(types: ResourceTypes, group: str, version: str) -> dict[str, Any] | None:
    resources = []
    for rtype in types.all():
        if (rtype.group, rtype.version) != (group, version):
            continue
        resources.append(_resource(rtype))
        sub = {"singularName": "", "namespaced": rtype.namespaced, "kind": rtype.kind}
        if rtype.status_subresource:
            resources.append({"name": f"{rtype.plural}/status", **sub, "verbs": _STATUS_VERBS})
        if rtype.kind == "Pod" and not rtype.group:
            resources.append({"name": "pods/log", **sub, "verbs": ["get"]})
        if rtype.kind in ("Service", "Pod") and not rtype.group:
            resources.append({"name": f"{rtype.plural}/proxy", **sub,
                              "kind": f"{rtype.kind}ProxyOptions", "verbs": _PROXY_VERBS})
    if not resources:
        return None
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

"""Defaults and validation of the built-in kinds and of every object's metadata, as the real API
server applies them on create and update (the subset our clients and `kubectl` can observe).
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import re
from collections.abc import Callable
from typing import Any

from sandbox.kube.resources import ResourceType

ANNOTATIONS_LIMIT_BYTES = 262144
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_NAME_RULES = {  # kind -> (regex, max length, message prefix, example)
    "subdomain": (_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character", "'example.com'"),
    "label": (_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
              "and must start and end with an alphanumeric character", "'my-name',  or '123-abc'"),
    "dns1035": (_DNS1035, 63, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
                "with an alphabetic character, and end with an alphanumeric character", "'my-name',  or 'abc-123'"),
}
_NAME_KIND = {"Namespace": "label", "Service": "dns1035"}

Cause = dict[str, str]


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def validate_name(kind: str, name: str) -> list[Cause]:
    rule = _NAME_KIND.get(kind, "subdomain")
    regex, limit, message, example = _NAME_RULES[rule]
    causes = []
    if len(name) > limit:
        causes.append(_cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": must be no more '
                             f"than {limit} characters"))
    if not re.fullmatch(regex, name):
        causes.append(_cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {message} '
                             f"(e.g. {example}, regex used for validation is '{regex}')"))
    return causes


def validate_metadata(rtype: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    """Name rules, the 262144-byte annotation budget, and label/annotation value types."""
    meta = obj.get("metadata") or {}
    causes = []
    name = meta.get("name")
    if not name:
        causes.append(_cause("FieldValueRequired", "metadata.name", "Required value: name or generateName is "
                             "required"))
    else:
        causes += validate_name(rtype.kind, str(name))
    annotations = meta.get("annotations") or {}
    if sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items()) > ANNOTATIONS_LIMIT_BYTES:
        causes.append(_cause("FieldValueTooLong", "metadata.annotations",
                             f"Too long: must have at most {ANNOTATIONS_LIMIT_BYTES} bytes"))
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            if not isinstance(value, str):
                causes.append(_cause("FieldValueTypeInvalid", f"metadata.{field}.{key}",
                                     f"Invalid value: {value!r}: must be a string"))
    return causes


# -- per-kind defaults (on create) -------------------------------------------------------------------
def _container_defaults(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    container.setdefault("imagePullPolicy", "Always" if tagless or image.endswith(":latest") else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def pod_spec_defaults(spec: dict[str, Any]) -> None:
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                       ("schedulerName", "default-scheduler"), ("terminationGracePeriodSeconds", 30),
                       ("securityContext", {}), ("enableServiceLinks", True)):
        spec.setdefault(key, value)
    for container in itertools.chain(spec.get("containers") or [], spec.get("initContainers") or []):
        _container_defaults(container)


def _pod(obj: dict[str, Any], **_: Any) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec_defaults(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == taint for t in tolerations):
            tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", _qos(spec))


def _qos(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(r.get("limits") and all(r.get("requests", r["limits"]).get(k) == v
                                             for k, v in r["limits"].items()) for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"


class _ClusterIPs:
    """Allocates Service cluster IPs from GKE's default services range (34.118.224.0/20)."""

    def __init__(self) -> None:
        self._next = itertools.count(10)
        self._base = ipaddress.ip_address("34.118.224.0")

    def allocate(self) -> str:
        return str(self._base + next(self._next))


def _service(obj: dict[str, Any], *, old: dict[str, Any] | None = None, ips: _ClusterIPs, **_: Any) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if "clusterIP" not in spec:
        spec["clusterIP"] = (old or {}).get("spec", {}).get("clusterIP") or ips.allocate()
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})


def _deployment(obj: dict[str, Any], **_: Any) -> None:
    spec = obj.setdefault("spec", {})
    for key, value in (("replicas", 1), ("revisionHistoryLimit", 10), ("progressDeadlineSeconds", 600),
                       ("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})):
        spec.setdefault(key, value)
    pod_spec_defaults(spec.setdefault("template", {}).setdefault("spec", {}))
    obj.setdefault("status", {})


def _namespace(obj: dict[str, Any], **_: Any) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _secret(obj: dict[str, Any], **_: Any) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


_DEFAULTERS: dict[str, Callable[..., None]] = {
    "Pod": _pod, "Service": _service, "Deployment": _deployment, "Namespace": _namespace, "Secret": _secret,
}


class BuiltinDefaults:
    """Per-cluster defaulting state (the Service IP allocator) and the per-kind defaulters."""

    def __init__(self) -> None:
        self._ips = _ClusterIPs()

    def apply(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        if rtype.crd_name is None and (defaulter := _DEFAULTERS.get(rtype.kind)):
            defaulter(obj, old=old, ips=self._ips)


# -- per-kind validation -------------------------------------------------------------------------
def validate_builtin(rtype: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    """Required fields the real server insists on for the kinds we serve (a subset)."""
    if rtype.crd_name is not None:
        return []
    spec = obj.get("spec") or {}
    if rtype.kind == "Pod":
        return _validate_containers(spec, "spec")
    if rtype.kind == "Deployment":
        return _validate_deployment(spec)
    if rtype.kind == "Service" and spec.get("type") != "ExternalName" and not spec.get("ports") \
            and spec.get("clusterIP") != "None":
        return [_cause("FieldValueRequired", "spec.ports", "Required value")]
    return []


def _validate_containers(spec: dict[str, Any], path: str) -> list[Cause]:
    containers = spec.get("containers") or []
    if not containers:
        return [_cause("FieldValueRequired", f"{path}.containers", "Required value")]
    causes = []
    for i, container in enumerate(containers):
        for key in ("name", "image"):
            if not container.get(key):
                causes.append(_cause("FieldValueRequired", f"{path}.containers[{i}].{key}", "Required value"))
    return causes


def _validate_deployment(spec: dict[str, Any]) -> list[Cause]:
    selector = spec.get("selector")
    if not selector:
        return [_cause("FieldValueRequired", "spec.selector", "Required value")]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    wanted = selector.get("matchLabels") or {}
    causes = _validate_containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
    if any(labels.get(k) != v for k, v in wanted.items()):
        shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
        causes.append(_cause("FieldValueInvalid", "spec.template.metadata.labels",
                             f"Invalid value: map[string]string{{{shown}}}: `selector` does not match template "
                             "`labels`"))
    return causes


# -- update rules (immutable fields) -------------------------------------------------------------------
_POD_MUTABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)")


def _pod_spec_frozen(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod spec that may not change after create."""
    frozen = {k: v for k, v in spec.items()
              if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")}
    for key in ("containers", "initContainers"):
        if key in frozen:
            frozen[key] = [{k: v for k, v in c.items() if k != "image"} for c in frozen[key]]
    return frozen


def _go_selector(selector: dict[str, Any]) -> str:
    labels = ", ".join(f'"{k}":"{v}"' for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return (f"v1.LabelSelector{{MatchLabels:map[string]string{{{labels}}}, "
            "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}")


def validate_update(rtype: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """Fields the real server refuses to change on update, for the built-in kinds we serve."""
    if rtype.crd_name is not None:
        return []
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if rtype.kind == "Pod" and _pod_spec_frozen(spec) != _pod_spec_frozen(old_spec):
        return [_cause("FieldValueForbidden", "spec", f"Forbidden: pod updates may not change fields other than "
                       f"{_POD_MUTABLE}")]
    if rtype.kind == "Deployment" and old_spec.get("selector") and spec.get("selector") != old_spec["selector"]:
        return [_cause("FieldValueInvalid", "spec.selector",
                       f"Invalid value: {_go_selector(spec.get('selector') or {})}: field is immutable")]
    if rtype.kind == "Service" and old_spec.get("clusterIP") and spec.get("clusterIP") != old_spec["clusterIP"]:
        return [_cause("FieldValueInvalid", "spec.clusterIPs[0]",
                       f'Invalid value: []string{{"{spec.get("clusterIP")}"}}: may not change once set')]
    if rtype.kind in ("Secret", "ConfigMap") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData"):
            if new.get(field) != old.get(field):
                return [_cause("FieldValueForbidden", field, "Forbidden: field is immutable when `immutable` is set")]
    return []

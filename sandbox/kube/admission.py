"""Everything between decoding a written object and storing it: defaults, CRD schema pruning and
validation, metadata rules, and the CRD lifecycle (names accepted, Established) on create.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sandbox.kube import status as st
from sandbox.kube.builtin_types import BuiltinDefaults, validate_builtin, validate_metadata, validate_update
from sandbox.kube.fields import SchemaNode
from sandbox.kube.resources import ResourceType, ResourceTypes
from sandbox.kube.schema import StructuralSchema


class Admission:
    """Per-cluster admission chain; caches each CRD version's compiled schema."""

    def __init__(self, types: ResourceTypes, defaults: BuiltinDefaults, now: Callable[[], str]):
        self.types = types
        self.now = now
        self.defaults = defaults
        self._lock = threading.Lock()
        self._schemas: dict[tuple[str, str, str], StructuralSchema | None] = {}

    def schema(self, rtype: ResourceType) -> StructuralSchema | None:
        if rtype.crd_name is None:
            return None
        crd = self.types.crd(rtype.crd_name)
        if crd is None:
            return None
        key = (rtype.crd_name, rtype.version, crd["metadata"].get("resourceVersion", ""))
        with self._lock:
            if key not in self._schemas:
                version = next((v for v in crd["spec"].get("versions") or [] if v.get("name") == rtype.version), {})
                raw = (version.get("schema") or {}).get("openAPIV3Schema")
                self._schemas = {k: v for k, v in self._schemas.items() if k[:2] != key[:2]}
                self._schemas[key] = StructuralSchema(raw) if raw else None
            return self._schemas[key]

    def node(self, rtype: ResourceType) -> SchemaNode:
        schema = self.schema(rtype)
        return SchemaNode(schema.schema if schema else None, builtin=rtype.crd_name is None)

    def admit(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, *,
              field_validation: str = "Warn") -> list[str]:
        """Default, prune and validate `obj` in place. Returns warnings; raises ApiError (400/422)."""
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        self.defaults.apply(rtype, obj, old)
        causes: list[dict[str, str]] = []
        warnings: list[str] = []
        schema = self.schema(rtype)
        if schema is not None:
            outcome = schema.admit(obj, old)
            if outcome.unknown and field_validation == "Strict":
                fields = ", ".join(f'unknown field "{path}"' for path in outcome.unknown)
                raise st.bad_request(f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                                     f"{rtype.kind}: strict decoding error: {fields}")
            if field_validation != "Ignore":
                warnings += [f'unknown field "{path}"' for path in outcome.unknown]
            causes += outcome.causes
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            causes += prepare_crd(obj, creating=old is None, now=self.now())
        causes = validate_metadata(rtype, obj) + causes + validate_builtin(rtype, obj)
        if old is not None:
            causes += validate_update(rtype, obj, old)
        if causes:
            raise st.invalid(rtype, str((obj.get("metadata") or {}).get("name") or ""), causes)
        return warnings


def prepare_crd(crd: dict[str, Any], *, creating: bool, now: str) -> list[dict[str, str]]:
    """Default and check a CRD's spec; on create, accept its names and mark it Established."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    causes = []
    for field in ("group",):
        if not spec.get(field):
            causes.append(st.field_cause("FieldValueRequired", f"spec.{field}", "Required value"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(st.field_cause("FieldValueRequired", f"spec.names.{field}", "Required value"))
    if causes:
        return causes
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})
    expected = f"{names['plural']}.{spec['group']}"
    if crd["metadata"].get("name") != expected:
        causes.append(st.field_cause("FieldValueInvalid", "metadata.name", f'Invalid value: '
                                     f'"{crd["metadata"].get("name")}": must be spec.names.plural+"."+spec.group'))
    storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    if len(storage) != 1:
        causes.append(st.field_cause("FieldValueInvalid", "spec.versions", f"Invalid value: {spec.get('versions')!r}"
                                     ": must have exactly one version marked as storage version"))
    if creating and not causes:
        crd["status"] = _established_status(names, storage[0], now)
    return causes


def _established_status(names: dict[str, Any], storage: str, stamp: str) -> dict[str, Any]:
    return {
        "acceptedNames": {k: v for k, v in names.items() if k in
                          ("plural", "singular", "kind", "listKind", "shortNames", "categories")},
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": stamp, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": stamp, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "storedVersions": [storage],
    }

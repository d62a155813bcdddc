"""Validate, prune and default custom resources against their CRD's structural OpenAPI v3 schema.

This follows what apiextensions-apiserver does with a structural schema, in the same order: drop
unknown fields (unless `x-kubernetes-preserve-unknown-fields`), drop nulls that are not `nullable`,
apply `default`s, then validate types, `required`, `enum`, bounds, `pattern`, lengths,
`x-kubernetes-int-or-string` and the simple CEL rules KubeRay's CRDs use. Errors come back as
field.Error causes (`spec.x: Invalid value: ...`) with the paths the real server names.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube import cel

_JSON_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


@dataclass
class Outcome:
    causes: list[dict[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)      # pruned field paths, for strict/warn validation


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type_ok(want: str | None, value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if want is None:
        return True
    if want == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if want == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES.get(want, object))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class StructuralSchema:
    """One CRD version's `openAPIV3Schema`, applied to objects of that version."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> Outcome:
        """Prune and default `obj` in place, then validate it (with `old` for transition rules)."""
        outcome = Outcome()
        props = self.schema.get("properties") or {}
        for key in list(obj):
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key not in props and not self.schema.get("x-kubernetes-preserve-unknown-fields"):
                outcome.unknown.append(key)
                del obj[key]
        for key, sub in props.items():
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = _normalize(obj[key], sub, key, outcome)
        for key in self.schema.get("required") or []:
            if key not in obj:
                outcome.causes.append(_cause("FieldValueRequired", key, "Required value"))
        for key, sub in props.items():
            if key in obj and key not in ("apiVersion", "kind", "metadata"):
                _validate(obj[key], sub, key, outcome, (old or {}).get(key), old is not None and key in old)
        return outcome


def _cause(reason: str, path: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": path}


def _normalize(value: Any, schema: dict[str, Any], path: str, outcome: Outcome) -> Any:
    """Prune unknown fields and non-nullable nulls, and apply defaults, below `value`."""
    if isinstance(value, dict) and not schema.get("x-kubernetes-int-or-string"):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = (props or {}).get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                if not (schema.get("x-kubernetes-preserve-unknown-fields") or extra is True):
                    outcome.unknown.append(_join(path, key))
                    del value[key]
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
                continue
            value[key] = _normalize(value[key], sub, _join(path, key), outcome)
        for key, sub in (props or {}).items():
            if key not in value and "default" in sub:
                value[key] = _normalize(copy.deepcopy(sub["default"]), sub, _join(path, key), outcome)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        for i, item in enumerate(value):
            value[i] = _normalize(item, items, f"{path}[{i}]", outcome)
    return value


def _validate(value: Any, schema: dict[str, Any], path: str, outcome: Outcome,
              old: Any = None, has_old: bool = False) -> None:
    want = schema.get("type")
    if value is None:
        if not schema.get("nullable"):
            outcome.causes.append(_cause("FieldValueTypeInvalid", path,
                                         f'Invalid value: "null": {path} in body must be of type {want}: "null"'))
        return
    if not _type_ok(want, value, schema):
        got = type_name(value)
        outcome.causes.append(_cause("FieldValueTypeInvalid", path,
                                     f'Invalid value: "{got}": {path} in body must be of type {want}: "{got}"'))
        return
    _check_scalar(value, schema, path, outcome)
    if isinstance(value, dict):
        _validate_object(value, schema, path, outcome, old if isinstance(old, dict) else None)
    elif isinstance(value, list):
        _validate_array(value, schema, path, outcome)
    for rule in schema.get("x-kubernetes-validations") or []:
        if not cel.holds(rule.get("rule", ""), value, old, has_old):
            outcome.causes.append(_cause("FieldValueInvalid", path,
                                         f'Invalid value: "{type_name(value)}": {rule.get("message") or rule.get("rule")}'))


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str, outcome: Outcome,
                     old: dict[str, Any] | None) -> None:
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in value:
            outcome.causes.append(_cause("FieldValueRequired", _join(path, key), "Required value"))
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            _validate(item, sub, _join(path, key), outcome, (old or {}).get(key), old is not None and key in old)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        outcome.causes.append(_cause("FieldValueTooMany", path,
                                     f"Too many: {len(value)}: must have at most {schema['maxProperties']} items"))


def _validate_array(value: list[Any], schema: dict[str, Any], path: str, outcome: Outcome) -> None:
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", outcome)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        outcome.causes.append(_cause("FieldValueTooMany", path,
                                     f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        outcome.causes.append(_cause("FieldValueInvalid", path, f"Invalid value: {len(value)}: {path} in body "
                                     f"should have at least {schema['minItems']} items"))
    if schema.get("x-kubernetes-list-type") == "map":
        _check_map_keys(value, schema.get("x-kubernetes-list-map-keys") or [], path, outcome)


def _check_map_keys(value: list[Any], keys: list[str], path: str, outcome: Outcome) -> None:
    seen: set[tuple[Any, ...]] = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        ident = tuple(str(item.get(k)) for k in keys)
        if ident in seen:
            shown = ", ".join(f'"{k}":{_render(item.get(k))}' for k in keys)
            outcome.causes.append(_cause("FieldValueDuplicate", f"{path}[{i}]", f"Duplicate value: map[string]"
                                         f"interface {{}}{{{shown}}}"))
        seen.add(ident)


def _check_scalar(value: Any, schema: dict[str, Any], path: str, outcome: Outcome) -> None:
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_render(v) for v in schema["enum"])
        outcome.causes.append(_cause("FieldValueNotSupported", path,
                                     f"Unsupported value: {_render(value)}: supported values: {allowed}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            outcome.causes.append(_cause("FieldValueTooLong", path,
                                         f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            outcome.causes.append(_cause("FieldValueInvalid", path, f"Invalid value: {_render(value)}: {path} "
                                         f"in body should be at least {schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            outcome.causes.append(_cause("FieldValueInvalid", path, f"Invalid value: {_render(value)}: {path} "
                                         f"in body should match '{schema['pattern']}'"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            outcome.causes.append(_cause("FieldValueInvalid", path, f"Invalid value: {value}: {path} in body "
                                         f"should be greater than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            outcome.causes.append(_cause("FieldValueInvalid", path, f"Invalid value: {value}: {path} in body "
                                         f"should be less than or equal to {schema['maximum']}"))

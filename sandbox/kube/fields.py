"""Field sets as server-side apply tracks them: which leaf fields of an object a manager owns.

A field path is a tuple of FieldsV1 elements: `f:spec`, `f:replicas`, or `k:{"name":"x"}` for an
item of an associative list. Atomic lists and scalars are leaves. `metadata` keeps only what the real
server tracks (labels, annotations, finalizers, ownerReferences). Lists are associative where the
CRD schema says `x-kubernetes-list-type: map` or, for built-in kinds, where the Go types merge by key.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox.kube.patching import _merge_key

Path = tuple[str, ...]
_TRACKED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


class SchemaNode:
    """A cursor into a CRD schema (or nothing, for built-in kinds) to find list keys while walking."""

    def __init__(self, schema: dict[str, Any] | None, builtin: bool):
        self.schema, self.builtin = schema, builtin

    def child(self, key: str) -> SchemaNode:
        if not self.schema:
            return SchemaNode(None, self.builtin)
        props = self.schema.get("properties") or {}
        extra = self.schema.get("additionalProperties")
        return SchemaNode(props.get(key, extra if isinstance(extra, dict) else None), self.builtin)

    def item(self) -> SchemaNode:
        items = (self.schema or {}).get("items")
        return SchemaNode(items if isinstance(items, dict) else None, self.builtin)

    def list_keys(self, field: str, items: list[Any]) -> list[str] | None:
        if self.schema is not None and self.schema.get("x-kubernetes-list-type") == "map":
            return list(self.schema.get("x-kubernetes-list-map-keys") or [])
        if self.builtin or field in ("ownerReferences",):
            key = _merge_key(field, items)
            return [key] if key else None
        return None


def item_key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item}, separators=(",", ":"), sort_keys=True)


def field_set(obj: dict[str, Any], node: SchemaNode, *, status: bool) -> set[Path]:
    """Leaf paths of `obj` (the status part only when `status`, otherwise everything but status)."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status") != status:
            continue
        if key == "metadata":
            meta = {k: v for k, v in (value or {}).items() if k in _TRACKED_METADATA}
            if meta:
                _walk(meta, ("f:metadata",), SchemaNode(None, True), paths)
            continue
        _walk_value(key, value, ("f:" + key,), node.child(key), paths)
    return paths


def _walk(obj: dict[str, Any], prefix: Path, node: SchemaNode, paths: set[Path]) -> None:
    for key, value in obj.items():
        _walk_value(key, value, (*prefix, "f:" + key), node.child(key), paths)


def _walk_value(key: str, value: Any, path: Path, node: SchemaNode, paths: set[Path]) -> None:
    if isinstance(value, dict) and value:
        _walk(value, path, node, paths)
        return
    keys = node.list_keys(key, value) if isinstance(value, list) else None
    if not keys or not all(isinstance(i, dict) for i in value):
        paths.add(path)
        return
    for item in value:
        item_path = (*path, item_key(item, keys))
        paths.add(item_path)
        _walk(item, item_path, node.item(), paths)


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """Render a path set as FieldsV1 JSON (`{"f:spec": {"f:x": {}}}`, `".": {}` for owned parents)."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:
        node = tree
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for element, sub in (tree or {}).items():
        if element == ".":
            paths.add(prefix)
            continue
        path = (*prefix, element)
        if sub:
            paths |= from_fields_v1(sub, path)
        else:
            paths.add(path)
    return paths


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) of `path` in `obj`."""
    node = obj
    for element in path:
        kind, name = element[:2], element[2:]
        if kind == "f:" and isinstance(node, dict) and name in node:
            node = node[name]
        elif kind == "k:" and isinstance(node, list):
            wanted = json.loads(name)
            node = next((i for i in node if isinstance(i, dict)
                         and all(i.get(k) == v for k, v in wanted.items())), _MISSING)
            if node is _MISSING:
                return False, None
        else:
            return False, None
    return True, node


_MISSING = object()


def remove_path(obj: Any, path: Path) -> None:
    """Delete the field or list item at `path` from `obj`, if present."""
    found, parent = value_at(obj, path[:-1])
    if not found:
        return
    kind, name = path[-1][:2], path[-1][2:]
    if kind == "f:" and isinstance(parent, dict):
        parent.pop(name, None)
    elif kind == "k:" and isinstance(parent, list):
        wanted = json.loads(name)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items()))]


def render_path(path: Path) -> str:
    """`.spec.containers[name="x"].image`, as conflict messages print a path."""
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        elif element.startswith("k:"):
            keys = json.loads(element[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
    return out

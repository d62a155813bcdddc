"""Server-side apply and `metadata.managedFields`, as the real API server's field manager does them.

Every write records who owns which fields. An Apply by manager M sets the fields of M's applied
configuration, removes fields M applied before and no longer applies (unless someone else owns them),
and fails with 409 when another manager owns a field M sets to a different value, unless `force`
(then M takes the field over). Other writes (create, update, patch) are `Update` operations: the
writer takes ownership of the fields it changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.kube.fields import (
    Path,
    SchemaNode,
    field_set,
    from_fields_v1,
    remove_path,
    render_path,
    to_fields_v1,
    value_at,
)


@dataclass(frozen=True)
class FieldConflict:
    manager: str
    api_version: str
    path: Path


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[FieldConflict]):
        super().__init__(conflict_message(conflicts))
        self.conflicts = conflicts


def conflict_message(conflicts: list[FieldConflict]) -> str:
    """`Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas`."""
    n = len(conflicts)
    if n == 1:
        c = conflicts[0]
        return f'Apply failed with 1 conflict: conflict with "{c.manager}" using {c.api_version}: {render_path(c.path)}'
    lines = [f"Apply failed with {n} conflicts: "]
    by_manager: dict[tuple[str, str], list[str]] = {}
    for c in conflicts:
        by_manager.setdefault((c.manager, c.api_version), []).append(render_path(c.path))
    for (manager, version), paths in by_manager.items():
        lines.append(f'conflicts with "{manager}" using {version}:')
        lines.extend(f"- {p}" for p in paths)
    return lines[0] + "\n".join(lines[1:])


@dataclass(frozen=True)
class WriteContext:
    manager: str
    api_version: str
    now: str
    node: SchemaNode
    subresource: str = ""          # "status" for writes through /status


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((obj or {}).get("metadata") or {}).get("managedFields") or [])


def _is(entry: dict[str, Any], manager: str, operation: str, subresource: str) -> bool:
    return (entry.get("manager"), entry.get("operation"), entry.get("subresource", "")) == \
        (manager, operation, subresource)


def _entry(ctx: WriteContext, operation: str, paths: set[Path]) -> dict[str, Any]:
    entry = {"manager": ctx.manager, "operation": operation, "apiVersion": ctx.api_version, "time": ctx.now,
             "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
    if ctx.subresource:
        entry["subresource"] = ctx.subresource
    return entry


def _store(obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    kept = [e for e in entries if e.get("fieldsV1")]
    meta = obj.setdefault("metadata", {})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def _conflicts(live: dict[str, Any], applied: dict[str, Any], paths: set[Path], ctx: WriteContext,
               ) -> list[tuple[int, FieldConflict]]:
    found = []
    for index, entry in enumerate(_entries(live)):
        if _is(entry, ctx.manager, "Apply", ctx.subresource) or entry.get("subresource", "") != ctx.subresource:
            continue
        for path in sorted(from_fields_v1(entry.get("fieldsV1") or {}) & paths):
            if path[-1].startswith("k:"):
                continue
            if value_at(live, path) != value_at(applied, path):
                found.append((index, FieldConflict(entry["manager"], entry.get("apiVersion", ""), path)))
    return found


def server_side_apply(live: dict[str, Any] | None, applied: dict[str, Any], ctx: WriteContext, *,
                      force: bool) -> dict[str, Any]:
    """Return the object after `ctx.manager` applies `applied` to `live` (None: the object is new).

    Raises ApplyConflict when other managers own fields set to other values and `force` is false.
    """
    status = ctx.subresource == "status"
    paths = field_set(applied, ctx.node, status=status)
    entries = _entries(live)
    conflicts = _conflicts(live or {}, applied, paths, ctx) if live else []
    if conflicts and not force:
        raise ApplyConflict([c for _, c in conflicts])
    for index, conflict in conflicts:
        owned = from_fields_v1(entries[index]["fieldsV1"]) - {conflict.path}
        entries[index] = dict(entries[index], fieldsV1=to_fields_v1(owned))
    mine = next((e for e in entries if _is(e, ctx.manager, "Apply", ctx.subresource)), None)
    result = live if live else {}  # both inputs are the caller's private copies: no need to copy again
    if mine is not None:
        others = set().union(*(from_fields_v1(e["fieldsV1"]) for e in entries if e is not mine))
        for path in sorted(from_fields_v1(mine["fieldsV1"]) - paths - others, key=len, reverse=True):
            remove_path(result, path)
    result = merge_applied(result, applied, ctx.node, status=status)
    entries = [e for e in entries if e is not mine] + [_entry(ctx, "Apply", paths)]
    _store(result, entries)
    return result


def merge_applied(live: dict[str, Any], applied: dict[str, Any], node: SchemaNode, *,
                  status: bool) -> dict[str, Any]:
    """Merge an applied configuration into `live`: maps deep, associative lists by key, the rest replaced.

    Takes ownership of both arguments: the result shares their values.
    """
    result = dict(live)
    for key, value in applied.items():
        if key == "status" and not status:
            continue
        if key == "metadata":
            meta = dict(result.get("metadata") or {})
            for mkey in ("labels", "annotations"):
                if mkey in (value or {}):
                    meta[mkey] = {**(meta.get(mkey) or {}), **(value[mkey] or {})}
            for mkey in ("finalizers", "ownerReferences", "name", "namespace", "generateName"):
                if mkey in (value or {}) and mkey not in meta:
                    meta[mkey] = value[mkey]
            result["metadata"] = meta
            continue
        result[key] = _merge_value(key, result.get(key), value, node.child(key))
    return result


def _merge_value(key: str, live: Any, value: Any, node: SchemaNode) -> Any:
    if isinstance(value, dict) and isinstance(live, dict) and value:
        merged = dict(live)
        for k, v in value.items():
            merged[k] = _merge_value(k, live.get(k), v, node.child(k))
        return merged
    if isinstance(value, list) and isinstance(live, list):
        keys = node.list_keys(key, value + live)
        if keys and all(isinstance(i, dict) for i in value + live):
            merged = list(live)
            for item in value:
                # Keys the applied item leaves out (e.g. a defaulted `protocol`) match any live value,
                # as the server defaults the applied configuration before merging.
                present = [k for k in keys if k in item]
                index = next((n for n, old in enumerate(merged)
                              if all(old.get(k) == item[k] for k in present)), None)
                if index is None:
                    merged.append(item)
                else:
                    merged[index] = _merge_value("", merged[index], item, node.item())
            return merged
    return value


def track_update(old: dict[str, Any] | None, new: dict[str, Any], ctx: WriteContext) -> None:
    """Record an Update by `ctx.manager` in `new`'s managedFields: it owns what it changed."""
    status = ctx.subresource == "status"
    new_paths = field_set(new, ctx.node, status=status)
    changed = {p for p in new_paths if old is None or value_at(old, p) != value_at(new, p)}
    entries = []
    for entry in _entries(old):
        owned = from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("subresource", "") == ctx.subresource:
            owned = (owned & new_paths) - changed if not _is(entry, ctx.manager, "Update", ctx.subresource) \
                else (owned & new_paths) | changed
        entries.append(dict(entry, fieldsV1=to_fields_v1(owned)))
    if changed and not any(_is(e, ctx.manager, "Update", ctx.subresource) for e in entries):
        entries.append(_entry(ctx, "Update", changed))
    else:
        entries = [dict(e, time=ctx.now) if _is(e, ctx.manager, "Update", ctx.subresource) and changed else e
                   for e in entries]
    _store(new, entries)

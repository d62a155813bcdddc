"""Label and field selectors over whole objects, as `?labelSelector=` and `?fieldSelector=` filter them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.kube.store import parse_label_selector

Matcher = Callable[[dict[str, Any]], bool]


def label_matcher(selector: str | None) -> Matcher:
    """Match objects by `metadata.labels`; raise ValueError for a selector the server rejects."""
    matches = parse_label_selector(selector)
    return lambda obj: matches((obj.get("metadata") or {}).get("labels") or {})


def _lookup(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_matcher(selector: str | None) -> Matcher:
    """Match objects by dotted field paths (`metadata.name=x,status.phase!=Running`)."""
    if not selector or not selector.strip():
        return lambda obj: True
    tests: list[tuple[str, bool, str]] = []
    for part in selector.split(","):
        if "!=" in part:
            path, value = part.split("!=", 1)
            tests.append((path.strip(), False, value.strip()))
        elif "=" in part:
            path, value = part.replace("==", "=").split("=", 1)
            tests.append((path.strip(), True, value.strip()))
        else:
            raise ValueError(f"invalid field selector: {part!r}: expected key=value or key!=value")
    return lambda obj: all((_lookup(obj, p) == v) == eq for p, eq, v in tests)

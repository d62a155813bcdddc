"""`events.k8s.io/v1` Events as a view of the core `v1` Events, as the real server stores them once.

Controllers write core Events (`involvedObject`, `message`, `source`); clients may read either API.
"""

from __future__ import annotations

from typing import Any

# events.k8s.io/v1 field <- core v1 field
_RENAMED = {"regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
            "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
            "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
_SHARED = ("metadata", "reason", "type", "action", "related", "eventTime", "series", "reportingInstance")


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    """The events.k8s.io/v1 form of a core Event."""
    out = {k: core[k] for k in _SHARED if core.get(k) is not None}
    for new, old in _RENAMED.items():
        value = core.get(old) if core.get(old) is not None else core.get(new)  # idempotent on v1 input
        if value is not None:
            out[new] = value
    if "reportingController" not in out and (core.get("source") or {}).get("component"):
        out["reportingController"] = core["source"]["component"]
    return out


def to_core(event: dict[str, Any]) -> dict[str, Any]:
    """The core v1 form of an events.k8s.io/v1 Event (what the store keeps)."""
    out = {k: event[k] for k in _SHARED if event.get(k) is not None}
    for new, old in _RENAMED.items():
        value = event.get(new) if event.get(new) is not None else event.get(old)  # idempotent on core input
        if value is not None:
            out[old] = value
    return out

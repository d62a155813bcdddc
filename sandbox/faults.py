"""Faults injected through the control API (`POST /_sandbox/faults`) and consulted by the simulators.

A fault is a JSON object with a `kind` (e.g. `stockout`, `transient`, `busy_cluster`, `quota`,
`image_pull_backoff`) and parameters. Two shapes cover every use:

- counted faults fire for the next `times` matching occasions (default: unlimited), e.g. a stockout
  in zone `us-east5-a` for 2 attempts;
- rate faults fire with probability `rate` per occasion (seeded, so a run is repeatable), e.g. 30% of
  API calls answer 503.

Simulators ask `faults.take(kind, **context)`: the first active fault of that kind whose parameters
match the context (a parameter absent from the fault matches anything) is returned and, if counted,
used up once. `DELETE /_sandbox/faults` clears them all.
"""

from __future__ import annotations

import random
import threading
from typing import Any

# Parameters that shape how a fault fires rather than what it matches.
_CONTROL_KEYS = {"kind", "times", "rate", "id", "fired"}


class Faults:
    """Thread-safe registry of active faults."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._active: list[dict[str, Any]] = []
        self._rng = random.Random(seed)
        self._next_id = 1

    def add(self, fault: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(fault, dict) or not isinstance(fault.get("kind"), str):
            raise ValueError(f"a fault needs a string 'kind'; got {fault!r}")
        rate = fault.get("rate")
        if rate is not None and not (0.0 <= float(rate) <= 1.0):
            raise ValueError(f"fault 'rate' must be between 0 and 1; got {rate!r}")
        times = fault.get("times")
        if times is not None and int(times) < 1:
            raise ValueError(f"fault 'times' must be >= 1; got {times!r}")
        with self._lock:
            stored = dict(fault, id=self._next_id, fired=0)
            self._next_id += 1
            self._active.append(stored)
            return dict(stored)

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            self._active = [f for f in self._active if kind is not None and f["kind"] != kind]

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._active]

    def peek(self, kind: str, **context: Any) -> dict[str, Any] | None:
        """The first matching fault of `kind`, without using it up or rolling its rate."""
        with self._lock:
            for fault in self._active:
                if fault["kind"] == kind and _matches(fault, context):
                    return dict(fault)
        return None

    def take(self, kind: str, **context: Any) -> dict[str, Any] | None:
        """Return the fault that fires now for `kind` in `context`, or None."""
        with self._lock:
            for fault in self._active:
                if fault["kind"] != kind or not _matches(fault, context):
                    continue
                rate = fault.get("rate")
                if rate is not None and self._rng.random() >= float(rate):
                    continue
                fault["fired"] += 1
                fired = dict(fault)
                if fault.get("times") is not None and fault["fired"] >= int(fault["times"]):
                    self._active.remove(fault)
                return fired
        return None


def _matches(fault: dict[str, Any], context: dict[str, Any]) -> bool:
    for key, wanted in fault.items():
        if key in _CONTROL_KEYS or key not in context:
            continue
        have = context[key]
        if isinstance(wanted, str) and isinstance(have, str) and wanted.endswith("*"):
            if not have.startswith(wanted[:-1]):
                return False
        elif wanted != have:
            return False
    return True

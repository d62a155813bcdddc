"""When each phase of a lifecycle ran, on the flow's clock, for the summary and the benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tasks.clock import Clock


@dataclass
class Phase:
    name: str
    start_s: float
    end_s: float | None = None
    outcome: str = "running"

    @property
    def duration_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s


class Timeline:
    """Phases in the order they started; safe to record from the threads of concurrent tasks."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.started_s = clock.time()
        self.phases: list[Phase] = []
        self._lock = threading.Lock()

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Record `name` from entry to exit; the outcome is "ok" or the exception's class name."""
        entry = Phase(name, self.clock.time())
        with self._lock:
            self.phases.append(entry)
        try:
            yield entry
        except BaseException as e:
            entry.outcome = type(e).__name__
            raise
        else:
            entry.outcome = "ok"
        finally:
            entry.end_s = self.clock.time()

    def record(self, name: str, start_s: float, *, outcome: str) -> Phase:
        """Record a phase that ran elsewhere (e.g. in a submitted task) from `start_s` until now."""
        entry = Phase(name, start_s, self.clock.time(), outcome)
        with self._lock:
            self.phases.append(entry)
            self.phases.sort(key=lambda p: p.start_s)
        return entry

    def elapsed_s(self) -> float:
        return self.clock.time() - self.started_s

    def as_rows(self) -> list[dict[str, object]]:
        """One dict per phase: name, offset from the start, duration (seconds) and outcome."""
        return [{"phase": p.name, "start_s": round(p.start_s - self.started_s, 1),
                 "duration_s": None if p.duration_s is None else round(p.duration_s, 1), "outcome": p.outcome}
                for p in self.phases]

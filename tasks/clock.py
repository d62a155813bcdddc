"""Clocks passed into waiters: real time in production, scaled time against the sandbox.

Waiters compute deadlines from `monotonic()` and sleep with `sleep()`; both are in the same unit
(seconds of the world being driven). Against a sandbox running at N times real speed, `ScaledClock(N)`
makes a 45-minute deadline mean 45 simulated minutes, so budgets and intervals keep their meaning.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that runs `time_scale` times faster than real time (1.0 is real time)."""

    def __init__(self, time_scale: float = 1.0):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._start = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._start) * self.time_scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.time_scale)

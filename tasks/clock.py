"""Clocks passed into waiters: real time in production, scaled time against the sandbox.

Waiters compute deadlines from `monotonic()` and sleep with `sleep()`; leases are stamped with
`time()`. All three are in seconds of the world being driven. Against a sandbox running at N times
real speed, `ScaledClock(N, anchor_epoch_s=<sandbox start>)` makes a 45-minute deadline mean 45
simulated minutes and makes every process agree with the sandbox on "now" (same anchor, same scale).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

# Simulation only: how fast and since when simulated time runs ("60@1764350000.5"). Unset = real time.
TIME_SCALE_ENV = "GKE_LLM_FLOWS_SIMULATED_CLOCK"


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that runs `time_scale` times faster than real time since `anchor_epoch_s` (default: now).

    `time()` is `anchor + (real_now - anchor) * time_scale`, the same formula the sandbox's clock
    follows from its start, so processes built with the sandbox's anchor agree on simulated "now".
    """

    def __init__(self, time_scale: float = 1.0, *, anchor_epoch_s: float | None = None):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.anchor_epoch_s = time.time() if anchor_epoch_s is None else float(anchor_epoch_s)

    def monotonic(self) -> float:
        return self.time()

    def time(self) -> float:
        return self.anchor_epoch_s + (time.time() - self.anchor_epoch_s) * self.time_scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.time_scale)

    def to_env(self) -> str:
        """The value of TIME_SCALE_ENV that rebuilds this clock in another process."""
        return f"{self.time_scale:g}@{self.anchor_epoch_s:.6f}"


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    """Return the clock the environment asks for: ScaledClock from TIME_SCALE_ENV, else SystemClock.

    Raises ValueError naming the variable when its value is malformed.
    """
    value = (os.environ if environ is None else environ).get(TIME_SCALE_ENV, "").strip()
    if not value:
        return SystemClock()
    try:
        scale, _, anchor = value.partition("@")
        return ScaledClock(float(scale), anchor_epoch_s=float(anchor) if anchor else None)
    except ValueError as e:
        raise ValueError(f"{TIME_SCALE_ENV}={value!r} is not '<scale>@<anchor epoch seconds>' "
                         f"(e.g. '60@1764350000.5'): {e}") from e

"""The one waiting loop: poll a probe until READY, fail fast on FATAL, time out on a deadline.

Probes classify each observation; this loop owns the deadline (from an injected clock, never from
adding up sleeps), the progress log line (only when the detail changes) and the errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from blocks.errors import RolloutFailed, WaitTimedOut
from tasks.clock import Clock


class State(Enum):
    READY = "ready"
    PROGRESSING = "progressing"
    FATAL = "fatal"


@dataclass(frozen=True)
class Look:
    """One classified observation: the state and a human-readable detail."""

    state: State
    detail: str


def wait_until_ready(probe: Callable[[], Look], *, what: str, timeout_s: float, interval_s: float,
                     clock: Clock, log: logging.Logger | logging.LoggerAdapter,
                     on_change: Callable[[Look], None] | None = None) -> Look:
    """Poll `probe` until READY and return that look.

    Raises RolloutFailed on a FATAL look and WaitTimedOut once `timeout_s` passes; logs (and calls
    `on_change`) only when the detail changes.
    """
    deadline, last = clock.monotonic() + timeout_s, None
    while (look := probe()).state is not State.READY:
        if look.state is State.FATAL:
            raise RolloutFailed(f"{what}: {look.detail}")
        left = deadline - clock.monotonic()
        if look.detail != last:
            log.info("%s: %s (%.0fs left)", what, look.detail, left)
            last = look.detail
            if on_change is not None:
                on_change(look)
        if left <= 0:
            raise WaitTimedOut(f"{what} not ready after {timeout_s:.0f}s; last seen: {look.detail}")
        clock.sleep(min(interval_s, left))
    return look

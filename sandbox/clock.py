"""The sandbox's scaled clock: simulated time that runs `time_scale` times faster than the wall.

Every simulated duration (operations, node boot, image pull, weight download) is measured on this clock,
and timers fire on it, so one simulated minute takes one real second at the default 60x.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

DEFAULT_TIME_SCALE = 60.0


class ScaledClock:
    """Simulated seconds that advance `time_scale` times faster than real time, plus timers.

    Simulated time starts at `start_epoch_s` (default: the real time at construction), so timestamps the
    sandbox reports look like real RFC 3339 times. `call_later` runs callbacks on one timer thread,
    in order of their simulated due time.
    """

    def __init__(self, time_scale: float = DEFAULT_TIME_SCALE, *, start_epoch_s: float | None = None):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._real_start = time.monotonic()
        self._sim_start = time.time() if start_epoch_s is None else float(start_epoch_s)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- reading time ---------------------------------------------------------------------------
    @property
    def anchor_epoch_s(self) -> float:
        """The real Unix time at which simulated time started: simulated now is
        `anchor + (real now - anchor) * time_scale`, so other processes can rebuild this clock."""
        return self._sim_start

    def elapsed_s(self) -> float:
        """Simulated seconds since the clock started."""
        return (time.monotonic() - self._real_start) * self.time_scale

    def now(self) -> float:
        """Simulated Unix time in seconds."""
        return self._sim_start + self.elapsed_s()

    def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)

    def rfc3339(self, epoch_s: float | None = None) -> str:
        """A timestamp as Kubernetes and GKE write them (`2026-11-28T16:44:55Z`)."""
        moment = datetime.fromtimestamp(self.now() if epoch_s is None else epoch_s, tz=timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- waiting --------------------------------------------------------------------------------
    def real_seconds(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds) / self.time_scale

    def sleep(self, sim_seconds: float) -> None:
        """Block the calling thread for `sim_seconds` of simulated time."""
        time.sleep(self.real_seconds(sim_seconds))

    def call_later(self, sim_delay_s: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the timer thread once `sim_delay_s` simulated seconds have passed."""
        self.call_at(self.elapsed_s() + max(0.0, sim_delay_s), callback)

    def call_at(self, sim_elapsed_s: float, callback: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._timers, (sim_elapsed_s, next(self._seq), callback))
            self._ensure_thread()
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run_timers, name="sandbox-clock", daemon=True)
            self._thread.start()

    def _run_timers(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._timers or self._timers[0][0] > self.elapsed_s()):
                    wait = None if not self._timers else self.real_seconds(self._timers[0][0] - self.elapsed_s())
                    self._cv.wait(timeout=wait)
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._timers)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a broken timer must not stop the clock for everyone
                import logging
                logging.getLogger("sandbox.clock").exception("timer callback failed")

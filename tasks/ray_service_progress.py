"""Progress reporting for the serving tasks: the run logger and a Prefect progress artifact.

Inside a Prefect flow or task run, progress goes to the run's logger and to a progress artifact;
outside one (plain `.fn()` calls, scripts) it goes to the module logger only, so nothing tries to
reach a Prefect API that is not there.
"""

from __future__ import annotations

import logging
import re
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

_FALLBACK = logging.getLogger("tasks.serving")


def in_prefect_run() -> bool:
    """True inside a flow or task run (where artifacts can be created)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def run_logger(fallback: logging.Logger = _FALLBACK) -> logging.Logger | logging.LoggerAdapter:
    """Return the Prefect run logger inside a run, else `fallback`."""
    try:
        return get_run_logger()
    except MissingContextError:
        return fallback


def artifact_key(*parts: str) -> str:
    """Return an artifact key (lowercase letters, digits and dashes) built from `parts`."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


class ProgressReport:
    """Log a line and move a progress artifact when the reported (percent, detail) changes."""

    def __init__(self, what: str, *, key: str, log: logging.Logger | logging.LoggerAdapter | None = None):
        self.what, self.key = what, key
        self.log = log or run_logger()
        self._artifact_id: UUID | None = None
        self._last: tuple[float, str] | None = None

    def report(self, percent: float, detail: str) -> bool:
        """Report `detail` at `percent` (0-100). Return True when it was new (and so reported)."""
        if self._last == (percent, detail):
            return False
        self._last = (percent, detail)
        self.log.info("%s: %s", self.what, detail)
        if in_prefect_run():
            description = f"{self.what}: {detail}"[:5000]
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(progress=percent, key=self.key,
                                                             description=description)
            else:
                update_progress_artifact(self._artifact_id, percent, description=description)
        return True

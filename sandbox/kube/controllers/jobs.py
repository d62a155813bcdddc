"""Jobs (`batch/v1`): the weight-staging copy, timed from the profile, then Complete.

Simplification: no pod is created; the Job itself stands for its one copy container. A Job whose
container env has `HF_REPO` (the staging Job of `tasks/weights.py`) runs for the repo's size (the
profile's `models` catalogue) at `weight_staging_mb_per_s`; any other Job completes after
`init_container_s`. Status follows the real controller's shape: `startTime`, `active`, then
`succeeded`, `completionTime` and the `SuccessCriteriaMet` and `Complete` conditions (Kubernetes 1.31+).
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kube.controllers.base import Reconciler, condition, set_condition
from sandbox.kube.rayserve import model_size_gb

JOBS = ("batch", "jobs")


class JobController(Reconciler):
    watches = (JOBS,)
    name = "job-controller"

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[str, float] = {}      # Job uid -> simulated second it started

    def reconcile(self) -> None:
        jobs, _ = self.ctx.store.list(JOBS)
        for job in jobs:
            if (condition(job.get("status") or {}, "Complete") or {}).get("status") != "True":
                self._advance(job)

    def _advance(self, job: dict[str, Any]) -> None:
        now, uid = self.ctx.clock.elapsed_s(), job["metadata"]["uid"]
        started = self._started.setdefault(uid, now)
        status = copy.deepcopy(job.get("status") or {})
        status.setdefault("startTime", self.ctx.clock.rfc3339())
        left = started + self._duration_s(job) - now
        if left > 0:
            status["active"] = 1
            self.write_status(JOBS, job, status)
            self.wake_in(left)
            return
        stamp = self.ctx.clock.rfc3339()
        status.pop("active", None)
        status.update(succeeded=1, completionTime=stamp)
        conditions = status.setdefault("conditions", [])
        for ctype in ("SuccessCriteriaMet", "Complete"):
            set_condition(conditions, ctype, "True", now=stamp, reason="CompletionsReached",
                          message="Reached expected number of succeeded pods")
        self.write_status(JOBS, job, status)

    def _duration_s(self, job: dict[str, Any]) -> float:
        containers = ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        env = {e.get("name"): e.get("value") for c in containers for e in c.get("env") or []}
        size_gb = model_size_gb(str(env.get("HF_REPO") or ""), self.ctx.profile) if env.get("HF_REPO") else None
        if size_gb is None:
            return self.profile("init_container_s", 2)
        return size_gb * 1000 / self.profile("weight_staging_mb_per_s", 500)

"""The weight-staging Job: copy a Hugging Face repo into a gs:// prefix once, from inside the cluster.

`render_staging_job` builds a `batch/v1` Job whose container walks the repo file by file: a file
already in the bucket is skipped (so a rerun resumes where a killed one stopped), every other one is
downloaded to a small scratch dir, uploaded and deleted (the CPU node's 100 GB disk never holds the
~700 GB), and a `_STAGED` marker object is written last. A Job that finds the marker exits at once.
`ensure_staging_job` creates it unless it exists (Complete: nothing to do; Failed: replaced, which
resumes); `wait_for_staging_job` waits with progress until it completes.

The pod needs write access to the bucket: Workload Identity on its Kubernetes service account
(`roles/storage.objectAdmin` on the bucket). Serving from the copy needs a Ray image whose Ray Serve LLM
reads `gs://` model sources (see docs/performance.md for the version caveat).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.errors import InvalidRequest, only_transient_errors
from blocks.labels import owner_labels
from blocks.spec import StackSpec
from tasks.clock import Clock
from tasks.gateways.kube import JOB, KubeApi
from tasks.kube_objects import condition
from tasks.waiting import Look, State, wait_until_ready

STAGING_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:stable"   # gcloud + python3
MARKER = "_STAGED"
POLL_S = 10.0
# Each file: list the bucket, skip what is there, else download, upload, delete; marker last.
COPY_SCRIPT = """
set -euo pipefail
if gcloud storage ls "$DEST/$MARKER" >/dev/null 2>&1; then echo "already staged: $DEST"; exit 0; fi
pip install --quiet --break-system-packages "huggingface_hub[hf_transfer]>=0.24"
export HF_HUB_ENABLE_HF_TRANSFER=1
python3 - <<'PY'
import os, subprocess, huggingface_hub as hub
repo, dest = os.environ["HF_REPO"], os.environ["DEST"]
files = hub.list_repo_files(repo)
have = set(subprocess.run(["gcloud", "storage", "ls", "-r", dest + "/**"], capture_output=True,
                          text=True).stdout.split())
for i, name in enumerate(files, 1):
    if f"{dest}/{name}" not in have:
        path = hub.hf_hub_download(repo, name, local_dir="/scratch")
        subprocess.run(["gcloud", "storage", "cp", path, f"{dest}/{name}"], check=True)
        os.remove(path)
    print(f"staged {i}/{len(files)} files", flush=True)
PY
date -u > /tmp/marker && gcloud storage cp /tmp/marker "$DEST/$MARKER"
"""


@dataclass(frozen=True)
class StagingResult:
    job: str
    action: str          # "created", "already complete", "replaced failed", "exists"
    destination: str


def staging_job_name(spec: StackSpec) -> str:
    """A stable Job name per (repo, destination): the same copy always finds the same Job."""
    digest = hashlib.sha256(f"{spec.serving.staged_from}->{spec.serving.model_source}".encode()).hexdigest()
    return f"stage-weights-{digest[:10]}"


def render_staging_job(spec: StackSpec) -> dict[str, Any]:
    """The staging Job manifest for `spec` (pure). Raises InvalidRequest unless model_source is gs://
    and staged_from names the Hugging Face repo."""
    s = spec.serving
    if not s.model_source.startswith("gs://") or not s.staged_from:
        raise InvalidRequest(f"stack {spec.name!r}: staging needs serving.model_source = gs://BUCKET/PATH "
                             f"(got {s.model_source!r}) and serving.staged_from = the Hugging Face repo "
                             f"(got {s.staged_from!r})")
    env = [{"name": "HF_REPO", "value": s.staged_from}, {"name": "DEST", "value": s.model_source.rstrip("/")},
           {"name": "MARKER", "value": MARKER}]
    container = {"name": "copy", "image": STAGING_IMAGE, "command": ["bash", "-c", COPY_SCRIPT], "env": env,
                 "resources": {"requests": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "60Gi"}},
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": staging_job_name(spec), "namespace": s.namespace, "labels": owner_labels(spec.name)},
            "spec": {"backoffLimit": 6, "template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [container],
                "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "60Gi"}}]}}}}


def job_look(job: dict[str, Any] | None, now_epoch_s: float) -> Look:
    """Classify a staging Job: READY when Complete, FATAL when Failed, else PROGRESSING with its age."""
    if job is None:
        return Look(State.PROGRESSING, "Job not created yet")
    status = job.get("status") or {}
    if (condition(status.get("conditions"), "Complete") or {}).get("status") == "True":
        return Look(State.READY, "copy complete")
    failed = condition(status.get("conditions"), "Failed")
    if (failed or {}).get("status") == "True":
        return Look(State.FATAL, f"Job failed: {failed.get('reason', '')} {failed.get('message', '')}".strip())
    return Look(State.PROGRESSING, f"copying ({status.get('active', 0)} pod active, "
                                   f"{status.get('failed', 0)} retries)")


@task(name="ensure-staging-job", retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors,
      cache_policy=NO_CACHE)
def ensure_staging_job(kube: KubeApi, spec: StackSpec) -> StagingResult:
    """Create the staging Job unless it exists. Complete: nothing to do; Failed: delete and recreate
    (the copy resumes: files already in the bucket are skipped)."""
    manifest = render_staging_job(spec)
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    live, dest = kube.get(JOB, name, ns), spec.serving.model_source
    look = job_look(live, 0)
    if look.state is State.READY:
        return StagingResult(name, "already complete", dest)
    if look.state is State.FATAL:
        kube.delete(JOB, name, ns)
        kube.apply(manifest)
        return StagingResult(name, "replaced failed", dest)
    if live is not None:
        return StagingResult(name, "exists", dest)
    kube.apply(manifest)
    return StagingResult(name, "created", dest)


@task(name="wait-for-staging-job", retries=2, retry_delay_seconds=[10, 30], retry_condition_fn=only_transient_errors,
      cache_policy=NO_CACHE)
def wait_for_staging_job(kube: KubeApi, spec: StackSpec, *, clock: Clock, timeout_s: float = 6 * 3600) -> str:
    """Wait until the Job completes; log and show progress (elapsed time) as it goes. Raises
    RolloutFailed when the Job fails (after its own retries), WaitTimedOut at `timeout_s`."""
    name, ns = staging_job_name(spec), spec.serving.namespace
    log: logging.Logger | logging.LoggerAdapter = get_run_logger()
    started = clock.monotonic()

    def probe() -> Look:
        # A Job reports no byte count; the container logs "staged i/N files". Elapsed time is shown here.
        look = job_look(kube.get(JOB, name, ns), clock.time())
        minutes = (clock.monotonic() - started) / 60
        return Look(look.state, f"{look.detail}, {minutes:.0f} min" if look.state is State.PROGRESSING else look.detail)

    return wait_until_ready(probe, what=f"staging Job {ns}/{name}", timeout_s=timeout_s, interval_s=POLL_S,
                            clock=clock, log=log).detail

"""stage-weights on a kept cluster without Workload Identity: refused with the commands, no Job created."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.stack_ref import StackRef, load_stack
from flows.stage_weights import stage_weights
from tasks.clock import clock_from_env
from tasks.cluster import ensure_cluster
from tasks.gateways.gke import GkeGateway
from tasks.gke_credentials import gke_credentials

pytestmark = pytest.mark.usefixtures("prefect_server")
BUCKET = "gs://team-weights/deepseek-ai/DeepSeek-R1"


def test_staging_onto_a_kept_cluster_without_workload_identity_says_what_to_run_and_creates_no_job(sandbox_stack):
    sandbox, stack = sandbox_stack
    spec, clock = load_stack(stack).spec, clock_from_env()
    gke = GkeGateway.connect(gke_credentials(None, api_endpoint=spec.cluster.api_endpoint),
                             api_endpoint=spec.cluster.api_endpoint, clock=clock)
    ensure_cluster.fn(gke, spec, clock=clock)          # kept from a Hugging Face stack: no Workload Identity

    data = yaml.safe_load(Path(stack.file).read_text())
    data["serving"].update({"model_source": BUCKET, "staged_from": "deepseek-ai/DeepSeek-R1"})
    staged = Path(stack.file).with_name("staged.yaml")
    staged.write_text(yaml.safe_dump(data))
    state = stage_weights(stack=StackRef(file=str(staged)), return_state=True)

    assert state.is_failed()
    assert "--workload-pool=" in state.message and "gcloud container clusters update" in state.message
    kube_requests = [r for c in sandbox.hooks.all() for r in c.requests()]
    assert not [r for r in kube_requests if r["method"] in ("POST", "PATCH")
                and "/jobs" in r["path"]]

"""Inside a real Prefect flow run: progress and validation artifacts are written, and no secret leaks.

Runs the serving tasks as Prefect tasks (not `.fn`) in a flow on the session's Prefect server, against
the sandbox, with an HF token configured; then reads the run's artifacts and logs back from the
Prefect API and scans them (and every local log record) for the token.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from prefect import flow

from tasks.kuberay_operator import ensure_kuberay_operator
from tasks.ray_service import ensure_ray_service
from tasks.ray_service_wait import wait_for_ray_service_ready
from tasks.validate_endpoint import validate_llm_endpoint
from tests.integration.kuberay_sandbox import HF_TOKEN, TOKEN, kube_sandbox, stack_spec

SECRETS = (HF_TOKEN, base64.b64encode(HF_TOKEN.encode()).decode(), TOKEN)


@pytest.fixture(scope="module")
def harness(prefect_server):
    """The session's real Prefect server (tests/conftest.py)."""
    yield


@pytest.fixture(scope="module")
def box():
    yield from kube_sandbox(time_scale=40.0, profile="fast", gpu_nodes=2)


def read_back(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return artifacts, logs


def test_a_spin_up_flow_records_progress_and_validation_artifacts_without_secrets(harness, box, caplog):
    spec = stack_spec(validation={"timeout_s": 600})

    @flow(name="kuberay-serving-under-test")
    def serve() -> float:
        ensure_kuberay_operator(box.kube, spec, clock=box.clock)
        ensure_ray_service(box.kube, spec, hf_token=HF_TOKEN)
        wait_for_ray_service_ready(box.kube, spec, clock=box.clock)
        return validate_llm_endpoint(box.kube, spec, clock=box.clock).tokens_per_s

    with caplog.at_level(logging.DEBUG):
        state = serve(return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    artifacts, logs = read_back(flow_run_id)
    for _ in range(50):                       # logs reach the API asynchronously
        if any("validation passed" in log.message for log in logs):
            break
        time.sleep(0.1)
        artifacts, logs = read_back(flow_run_id)

    by_type: dict[str, list] = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    progress = by_type["progress"]
    assert [a.key for a in progress] == ["deepseek-r1-model-load"] and float(progress[0].data) == 100.0
    assert "serve-running: serving" in progress[0].description
    table = json.loads(next(a for a in by_type["table"] if a.key == "deepseek-r1-validation").data)
    assert {row["check"]: row["ok"] for row in table}["answer matches"] is True
    markdown = next(a for a in by_type["markdown"] if a.key == "deepseek-r1-validation-answer").data
    assert "red, yellow, blue, green" in markdown and "tokens_per_s" in markdown
    assert any("validation passed" in log.message for log in logs)

    texts = [str(a.data) + str(a.description) for a in artifacts] + [log.message for log in logs] + \
        [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text

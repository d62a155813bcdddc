"""Whole flows on a real local Prefect server against the sandbox (real clients, real HTTP)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prefect.client.orchestration import get_client

from flows.demo import demo_stack_file, still_billing
from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef
from flows.status import stack_status
from sandbox.app import Sandbox
from tasks.clock import TIME_SCALE_ENV
from tests.e2e.conftest import E2E_TIME_SCALE

pytestmark = pytest.mark.usefixtures("prefect_server")


@dataclass
class Up:
    sandbox: Sandbox
    stack: StackRef
    summary: dict


@pytest.fixture(scope="module")
def spun_up(prefect_server, tmp_path_factory) -> Iterator[Up]:
    """One sandbox and one spin-up from nothing, shared by the three tests that need a running stack
    (a spin-up is most of each one's time). They run in file order: the spin-up's report, a second
    spin-up on the running stack, then the spin-down; each brings the stack up again if it is not."""
    with pytest.MonkeyPatch.context() as patch, Sandbox(time_scale=E2E_TIME_SCALE, kubernetes=True) as sandbox:
        patch.setenv(TIME_SCALE_ENV, sandbox.flows_clock_env())
        stack = StackRef(file=str(demo_stack_file(sandbox.gke_url, tmp_path_factory.mktemp("lifecycle"))))
        yield Up(sandbox, stack, serve_llm(stack=stack))


def _ensure_up(up: Up) -> None:
    if still_billing(up.sandbox.inventory()) != ["kuberay-gpu-cluster/gpu-node-pool"]:
        serve_llm(stack=up.stack)


def test_spin_up_from_nothing_validates_the_guides_answer(spun_up):
    sandbox, stack, summary = spun_up.sandbox, spun_up.stack, spun_up.summary
    assert _creates(sandbox) == {"clusters": 1, "nodePools": 1}     # it started from nothing
    assert summary["model"] == "deepseek"
    assert "red, yellow, blue, green" in summary["answer"]
    assert [row["phase"] for row in summary["timeline"]][:1] == ["cluster"]
    assert {"gpu-node-pool", "model-load", "validation"} <= {row["phase"] for row in summary["timeline"]}
    assert summary["estimated_cost_usd"] > 0
    assert summary["weights_prefetch"]["source"] == "deepseek-ai/DeepSeek-R1"
    assert "- **Weights**: prefetched onto" in summary["summary_markdown"]
    status = stack_status(stack=stack)
    assert status["ray_service"]["ready"] is True
    # The prefetch DaemonSet ran on both GPU nodes; its copies are complete (pods Ready) by the answer.
    assert status["weights_prefetch"] == {"source": "deepseek-ai/DeepSeek-R1", "gpu_nodes": 2, "complete_on": 2}
    assert still_billing(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool"]


def test_a_second_spin_up_converges_without_writing_twice(spun_up):
    _ensure_up(spun_up)
    creates_before = _creates(spun_up.sandbox)
    serve_llm(stack=spun_up.stack)
    assert _creates(spun_up.sandbox) == creates_before      # no cluster or node pool created twice


def test_spin_down_leaves_nothing_billing_and_keeps_the_cluster(spun_up):
    sandbox, stack = spun_up.sandbox, spun_up.stack
    _ensure_up(spun_up)
    teardown_llm(stack=stack)

    assert still_billing(sandbox.inventory()) == []
    status = stack_status(stack=stack)
    assert status["cluster"] == "RUNNING"          # the default policy keeps the cluster (warm mode)
    assert status["gpu_node_pool"] is None and status["ray_service"] is None
    assert status["weights_prefetch"] is None      # the spin-down deleted the DaemonSet too
    teardown_llm(stack=stack, delete_cluster_too=True)
    assert sandbox.inventory()["clusters"] == []


def test_a_fatal_sign_mid_wait_fails_the_run_with_its_cause_and_tears_down(sandbox_stack):
    sandbox, stack = sandbox_stack
    sandbox.inject({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1"})
    state = serve_llm(stack=stack, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="ErrImagePull|ImagePullBackOff"):
        state.result()
    assert still_billing(sandbox.inventory()) == []
    assert _teardown_runs_after(state) == ["COMPLETED"]


def test_keep_on_failure_keeps_the_stack_for_debugging(sandbox_stack):
    sandbox, stack = sandbox_stack
    sandbox.inject({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1"})
    state = serve_llm(stack=stack, keep_on_failure=True, return_state=True)
    assert state.is_failed()
    assert still_billing(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool"]
    teardown_llm(stack=stack)
    assert still_billing(sandbox.inventory()) == []


def test_two_spin_ups_of_one_stack_do_not_overlap(sandbox_stack):
    sandbox, stack = sandbox_stack
    results: list[dict] = []
    runs = [threading.Thread(target=contextvars.copy_context().run,
                             args=(lambda: results.append(serve_llm(stack=stack)),)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=240)
    assert len(results) == 2
    assert _creates(sandbox) == {"clusters": 1, "nodePools": 1}
    first, second = sorted(results, key=lambda r: r["ready_after_s"])
    # The second waited for the stack lock, then found everything in place: nothing to create.
    assert [row["phase"] for row in second["timeline"]][0] == "cluster"
    teardown_llm(stack=stack, delete_cluster_too=True)
    assert still_billing(sandbox.inventory()) == []


def _creates(sandbox) -> dict[str, int]:
    counts = {"clusters": 0, "nodePools": 0}
    for request in sandbox.requests():
        if request["method"] == "POST":
            for kind in counts:
                if request["path"].endswith(f"/{kind}"):
                    counts[kind] += 1
    return counts


def _teardown_runs_after(state) -> list[str]:
    """States of the teardown-llm runs that the failed spin-up's hook started (named in their reason)."""
    with get_client(sync_client=True) as client:
        spin_up = client.read_flow_run(state.state_details.flow_run_id)
        flows = {f.id: f.name for f in client.read_flows()}
        runs = client.read_flow_runs()
    return [r.state.type.value for r in runs if flows.get(r.flow_id) == "teardown-llm"
            and repr(spin_up.name) in str(r.parameters.get("reason", ""))]

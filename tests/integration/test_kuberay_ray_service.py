"""The RayService lifecycle on the sandbox: apply, load to ready, validate, update in place, delete.

One simulated cluster (realistic timing profile at 200x) serves the whole module, in order: the
guide's 30-minute DeepSeek-R1 load takes a few wall seconds.
"""

from __future__ import annotations

import base64
import logging
import threading

import pytest

from blocks.errors import DriftError, NotOursError, ValidationFailed
from sandbox.kube import rayserve
from tasks.gateways.kube import POD, RAY_CLUSTER, RAY_SERVICE, SECRET
from tasks.kuberay_operator import ensure_kuberay_operator
from tasks.ray_service import Action, delete_ray_service, ensure_ray_service
from tasks.ray_service_wait import WaitSettings, wait_for_ray_service_ready
from tasks.validate_endpoint import validate_llm_endpoint
from tasks.waiting import State
from tests.integration.kuberay_sandbox import HF_TOKEN, TOKEN, kube_sandbox, stack_spec

NS, NAME = "default", "deepseek-r1"
# At 200x the default one-minute suspect grace is 0.3 wall seconds: less than the sandbox scheduler
# may take, on a busy machine, to bind pods once the GPUs turn allocatable. (The fault tests run at 40x.)
SETTINGS = WaitSettings(timeout_s=6 * 3600, suspect_grace_s=600)


@pytest.fixture(scope="module")
def box():
    yield from kube_sandbox(time_scale=200.0, profile="realistic")


@pytest.fixture(scope="module")
def logs():
    """Every log record of the module (to prove no secret was ever logged)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)


def spec(**serving):
    return stack_spec(serving=serving, validation={"timeout_s": 600})


def test_the_rayservice_loads_to_ready_in_simulated_time_through_every_phase(box, logs):
    ensure_kuberay_operator.fn(box.kube, spec(), clock=box.clock)
    result = ensure_ray_service.fn(box.kube, spec(), hf_token=HF_TOKEN, lease_expiry_epoch_s=2_000_000_000,
                                   run_id="run-1")
    assert result.action is Action.CREATE and result.secret_applied
    nodes_added = threading.Event()

    def gpu_pool_comes_up():           # the GPU pool finishes while the RayService already waits
        box.add_gpu_nodes(2)
        nodes_added.set()

    threading.Timer(0.3, gpu_pool_comes_up).start()
    started = box.sim_elapsed_s()
    look = wait_for_ray_service_ready.fn(box.kube, spec(), clock=box.clock, settings=SETTINGS,
                                         capacity_coming=lambda: not nodes_added.is_set())
    loaded_min = (box.sim_elapsed_s() - started) / 60
    assert look.state is State.READY and "llm_app RUNNING" in look.detail
    # realistic profile: driver install, 10.5 GB image, 688 GB of weights, engine start (~30 min), plus
    # whatever sandbox latency a busy test machine adds at 200x
    assert 15 < loaded_min < 120, loaded_min
    progress = [r.getMessage() for r in logs if r.name.startswith("tasks.")]
    for phase in ("gpu-nodes", "image-pull", "weight-download", "engine-start", "serve-running"):
        assert any(f": {phase}:" in line for line in progress), (phase, progress)
    # the download, watched as the guide does: a worker's disk fills to the 688 GB of weights + image
    assert any("GB used, growing" in line for line in progress), progress
    assert any(": engine-start:" in line and "worker disk ~700 GB used" in line for line in progress), progress


def test_the_hf_token_reaches_the_pods_only_through_the_secret(box):
    secret = box.kube.get(SECRET, "hf-token", NS)
    assert base64.b64decode(secret["data"]["hf_token"]).decode() == HF_TOKEN
    rs = box.kube.get(RAY_SERVICE, NAME, NS)
    env = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "hf_token"}}}]


def test_applying_the_same_spec_again_writes_nothing(box):
    box.spy.calls.clear()
    result = ensure_ray_service.fn(box.kube, spec(), hf_token=HF_TOKEN, lease_expiry_epoch_s=2_000_000_000,
                                   run_id="run-1")
    assert result.action is Action.NOOP and not result.secret_applied
    assert box.spy.writes() == []


def test_the_endpoint_passes_validation_through_the_api_servers_service_proxy(box):
    report = validate_llm_endpoint.fn(box.kube, spec(), clock=box.clock)
    assert report.passed and report.status == 200 and report.finish_reason == "stop"
    assert "/api/v1/namespaces/default/services/deepseek-r1-serve-svc:serve/proxy" in report.url
    assert "red, yellow, blue, green" in report.answer
    # simulated seconds: at 200x the wall time of each HTTPS round trip counts too, so only sanity here
    assert report.completion_tokens > 0 and report.latency_s > 0 and report.tokens_per_s > 0


@pytest.mark.parametrize("status", [503, 500])   # 500: the API server's own Status, not the model's answer
def test_validation_retries_transient_proxy_failures(box, status):
    box.inject({"kind": "kube_transient", "status": status, "times": 2,
                "path": "/api/v1/namespaces/default/services/deepseek-r1-serve-svc*"})
    report = validate_llm_endpoint.fn(box.kube, spec(), clock=box.clock)
    # models: 2 injected failures + 1; chat: 1. A busy machine may add a retry of its own (a timeout).
    assert report.passed and report.attempts >= 4
    assert box.ctx.faults.list() == []


def test_a_wrong_answer_fails_validation_and_shows_the_answer(box):
    fault = box.inject({"kind": "wrong_answer"})
    try:
        with pytest.raises(ValidationFailed, match=r"expected_pattern.*Answer: .*red, blue, yellow, green"):
            validate_llm_endpoint.fn(box.kube, spec(), clock=box.clock)
    finally:
        box.ctx.faults.clear("wrong_answer")
    assert fault["kind"] == "wrong_answer"


def test_a_slow_answer_fails_validation_at_the_spec_timeout(box):
    box.inject({"kind": "slow_answer", "seconds": 900})
    started = box.sim_elapsed_s()
    try:
        with pytest.raises(ValidationFailed, match="no complete answer within the validation.timeout_s"):
            validate_llm_endpoint.fn(box.kube, spec(), clock=box.clock)
    finally:
        box.ctx.faults.clear("slow_answer")
    assert box.sim_elapsed_s() - started < 900


def test_a_serve_config_change_updates_the_running_cluster_in_place(box):
    before = box.kube.get(RAY_SERVICE, NAME, NS)
    cluster = before["status"]["activeServiceStatus"]["rayClusterName"]
    changed = spec(max_num_seqs=64)
    result = ensure_ray_service.fn(box.kube, changed, hf_token=HF_TOKEN, lease_expiry_epoch_s=2_000_000_000,
                                   run_id="run-1")
    assert result.action is Action.UPDATE_IN_PLACE and result.changed_paths == ["spec.serveConfigV2"]
    look = wait_for_ray_service_ready.fn(box.kube, changed, clock=box.clock, settings=SETTINGS)
    after = box.kube.get(RAY_SERVICE, NAME, NS)
    assert look.state is State.READY
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["status"]["activeServiceStatus"]["rayClusterName"] == cluster
    assert [c["metadata"]["name"] for c in box.kube.list(RAY_CLUSTER, NS).items] == [cluster]
    assert "max_num_seqs: 64" in after["spec"]["serveConfigV2"]
    serve = rayserve.serve_registry(box.ctx).instance(NS, cluster)          # what Ray Serve now runs
    engine = serve.apps["llm_app"].config["args"]["llm_configs"][0]["engine_kwargs"]
    assert engine["max_num_seqs"] == 64
    assert serve.status()["applications"]["llm_app"]["status"] == "RUNNING"


def test_a_redeploy_without_a_lease_keeps_the_live_lease_and_run_labels(box):
    box.spy.calls.clear()
    result = ensure_ray_service.fn(box.kube, spec(max_num_seqs=64), hf_token=HF_TOKEN)
    assert result.action is Action.NOOP and box.spy.writes() == []
    labels = box.kube.get(RAY_SERVICE, NAME, NS)["metadata"]["labels"]
    assert labels["gke-llm-flows-lease-expiry"] == "2000000000" and labels["gke-llm-flows-run-id"] == "run-1"


def test_a_cluster_change_is_refused_without_touching_the_rayservice(box):
    box.spy.calls.clear()
    with pytest.raises(DriftError, match="twice the GPUs"):
        ensure_ray_service.fn(box.kube, spec(max_num_seqs=64, ray_image="rayproject/ray-llm:2.53.0-py311-cu128"),
                              hf_token=HF_TOKEN, lease_expiry_epoch_s=2_000_000_000, run_id="run-1")
    assert box.spy.writes() == []


def test_an_allowed_cluster_change_with_strategy_none_deletes_then_recreates(box):
    before = box.kube.get(RAY_SERVICE, NAME, NS)
    old_cluster = before["status"]["activeServiceStatus"]["rayClusterName"]
    changed = spec(max_num_seqs=64, ray_image="rayproject/ray-llm:2.53.0-py311-cu128", upgrade_strategy="None",
                   allow_cluster_recreate=True)
    result = ensure_ray_service.fn(box.kube, changed, hf_token=HF_TOKEN, lease_expiry_epoch_s=2_000_000_000,
                                   run_id="run-1", clock=box.clock)
    assert result.action is Action.RECREATE
    after = box.kube.get(RAY_SERVICE, NAME, NS)
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert box.kube.get(RAY_CLUSTER, old_cluster, NS) is None
    assert box.kube.list(POD, NS, label_selector=f"ray.io/cluster={old_cluster}").items == []


def test_a_foreign_rayservice_is_neither_changed_nor_deleted(box):
    foreign = stack_spec(name="someone-else", serving={"ray_service_name": NAME})
    with pytest.raises(NotOursError):
        ensure_ray_service.fn(box.kube, foreign)
    with pytest.raises(NotOursError):
        delete_ray_service.fn(box.kube, foreign, clock=box.clock)


def test_delete_waits_until_the_ray_cluster_and_its_pods_are_gone_and_repeats_cleanly(box):
    assert delete_ray_service.fn(box.kube, spec(), clock=box.clock) is True
    assert box.kube.get(RAY_SERVICE, NAME, NS) is None
    assert box.kube.list(RAY_CLUSTER, NS).items == []
    assert box.kube.list(POD, NS, label_selector="ray.io/cluster").items == []
    assert delete_ray_service.fn(box.kube, spec(), clock=box.clock) is False


def test_no_secret_appears_in_any_log_record(box, logs):
    assert logs, "the module's log records were captured"
    encoded = base64.b64encode(HF_TOKEN.encode()).decode()
    for record in logs:
        text = record.getMessage()
        assert HF_TOKEN not in text and encoded not in text and TOKEN not in text, record.name

"""Every sandbox fault of the model load is detected early, with a message naming cause and object.

"Early" is measured on the sandbox's own clock: from the moment the sign first shows in the cluster
(seen by a harness thread reading the sandbox's store) to the moment the waiter raises. The `fast`
profile at 40x keeps each scenario to a few wall seconds while one wall second of a busy machine's
latency still costs well under one simulated minute.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from blocks.errors import RolloutFailed, WaitTimedOut
from tasks.gateways.kube import NAMESPACE, RAY_SERVICE, KubeRejected
from tasks.ray_service import delete_ray_service, ensure_ray_service
from tasks.ray_service_wait import PhaseBudgets, WaitSettings, wait_for_ray_service_ready
from tasks.waiting import State
from tests.integration.kuberay_sandbox import (
    operator_sandbox,
    reset_scenario,
    stack_spec,
    wait_for,
)

EARLY_S = 90.0          # "within about a minute" of the sign, plus one look interval of slack


@pytest.fixture(scope="module")
def box():
    yield from operator_sandbox(40.0)


@pytest.fixture
def clean(box):
    """After each scenario: no faults, and the RayService with its cluster and pods gone."""
    yield
    reset_scenario(box)


class FirstSign:
    """Records (on the sandbox clock) when `predicate(store)` first holds."""

    def __init__(self, box, predicate: Callable[[Any], bool]):
        self.box, self.predicate, self.at_s = box, predicate, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.at_s is None:
            if self.predicate(self.box.ctx.store):
                self.at_s = self.box.sim_elapsed_s()
            time.sleep(0.005)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        assert self.at_s is not None, "the fault's sign never showed in the cluster"
        return self.at_s


def pods(store) -> list[dict[str, Any]]:
    return [p for p in store.list(("", "pods"))[0] if (p["metadata"].get("labels") or {}).get("ray.io/cluster")]


def container_states(store):
    for pod in pods(store):
        yield from (pod.get("status") or {}).get("containerStatuses") or []


def waiting_in(*reasons):
    return lambda store: any(((cs.get("state") or {}).get("waiting") or {}).get("reason") in reasons
                             for cs in container_states(store))


def oom_killed(store):
    return any(((cs.get(k) or {}).get("terminated") or {}).get("reason") == "OOMKilled"
               for cs in container_states(store) for k in ("state", "lastState"))


def app_deploy_failed(store):
    return any(app.get("status") == "DEPLOY_FAILED"
               for rs in store.list(("ray.io", "rayservices"))[0]
               for block in ((rs.get("status") or {}).get("pendingServiceStatus") or {},
                             (rs.get("status") or {}).get("activeServiceStatus") or {})
               for app in (block.get("applicationStatuses") or {}).values())


def app_status(store) -> str | None:
    for rs in store.list(("ray.io", "rayservices"))[0]:
        for app in ((rs.get("status") or {}).get("pendingServiceStatus") or {}).get("applicationStatuses", {}).values():
            return app.get("status")
    return None


def unschedulable(store):
    return any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
               for p in pods(store) for c in (p.get("status") or {}).get("conditions") or [])


def run_until_failure(box, fault, sign, *, settings=None):
    """Inject `fault`, apply the RayService, wait; return (error, simulated seconds from sign to error)."""
    box.inject(fault)
    spec = stack_spec()
    ensure_ray_service.fn(box.kube, spec)
    first = FirstSign(box, sign)
    with pytest.raises((RolloutFailed, WaitTimedOut)) as failure:
        wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock, settings=settings)
    raised_at = box.sim_elapsed_s()
    return failure.value, raised_at - first.stop()


@pytest.mark.parametrize("fault, sign, expected", [
    ({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1"}, waiting_in("ErrImagePull", "ImagePullBackOff"),
     r"pod default/deepseek-r1-\w+-(head|gpu-group-worker)-\w+ container '[\w-]+' is (ErrImagePull|ImagePullBackOff)"
     r".*image rayproject/ray-llm:2.52.0-py311-cu128"),
    ({"kind": "crashloop", "pod_prefix": "deepseek-r1"}, waiting_in("CrashLoopBackOff"),
     r"pod default/deepseek-r1-\S+ container '[\w-]+' is CrashLoopBackOff|HeadPodReady.*CrashLoopBackOff|"
     r"head pod not ready: CrashLoopBackOff"),
    ({"kind": "oom_killed"}, oom_killed, r"pod default/deepseek-r1-\S+-gpu-group-worker-\S+ container '[\w-]+' was "
     r"OOMKilled \(exit code 137"),
    ({"kind": "deploy_failed"}, app_deploy_failed, r"Serve app 'llm_app' on cluster deepseek-r1-\w+ is DEPLOY_FAILED"),
])
def test_a_fatal_sign_fails_the_wait_within_about_a_minute(box, clean, fault, sign, expected):
    error, after_s = run_until_failure(box, fault, sign)
    assert isinstance(error, RolloutFailed)
    assert "RayService default/deepseek-r1" in str(error)
    assert pytest.approx(0, abs=EARLY_S) == after_s, f"{after_s:.0f}s after the sign: {error}"
    assert re.search(expected, str(error)), str(error)


def test_gpu_pods_unschedulable_with_no_capacity_coming_fail_after_the_scale_up_grace(box, clean):
    settings = WaitSettings(timeout_s=3600, suspect_grace_s=60)
    error, after_s = run_until_failure(box, {"kind": "no_gpu_capacity"},
                                       unschedulable, settings=settings)
    assert isinstance(error, RolloutFailed)
    assert "unschedulable" in str(error) and "Insufficient nvidia.com/gpu" in str(error)
    assert "no GPU capacity is coming" in str(error) and "[gpu-nodes]" in str(error)
    persisted_s = int(re.search(r"\(persisted (\d+)s\)", str(error)).group(1))
    assert persisted_s >= 60                           # the scale-up grace was given ...
    assert after_s <= 60 + EARLY_S, after_s            # ... and not much more


def evicted(store):
    return any((p.get("status") or {}).get("reason") == "Evicted" for p in pods(store))


def test_evictions_for_a_full_disk_fail_the_wait_instead_of_restarting_the_download_forever(box, clean):
    error, after_s = run_until_failure(box, {"kind": "disk_full"}, evicted)
    assert isinstance(error, RolloutFailed)
    assert "eviction(s) of the RayCluster's pods" in str(error) and "ephemeral-storage" in str(error)
    assert after_s <= 60 + EARLY_S, after_s


def test_a_stalled_weight_download_is_a_stall_naming_the_phase(box, clean):
    settings = WaitSettings(timeout_s=6 * 3600, budgets=PhaseBudgets(weight_download_s=120))
    error, _ = run_until_failure(box, {"kind": "stalled_download"}, lambda store: True, settings=settings)
    assert isinstance(error, WaitTimedOut)
    assert "stalled in phase weight-download" in str(error) and "budget 120s" in str(error)
    assert "llm_app DEPLOYING" in str(error)


def test_api_errors_and_dropped_watches_are_ridden_out(box, clean):
    spec = stack_spec()
    ensure_ray_service.fn(box.kube, spec)
    box.inject({"kind": "kube_transient", "status": 503, "times": 4,
                "path": "/apis/ray.io/v1/namespaces/default/rayservices*"})
    box.inject({"kind": "watch_disconnect", "times": 3, "after_s": 0.01})
    box.inject({"kind": "kube_transient", "status": 429, "times": 2, "path": "/api/v1/namespaces/default/pods*"})
    look = wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock)
    assert look.state is State.READY
    left = box.ctx.faults.list()       # counted faults leave the registry once used up
    assert [f["kind"] for f in left] in ([], ["watch_disconnect"]), left
    assert all(f["fired"] >= 1 for f in left), "the waiter's watch was dropped at least once"


def test_a_wait_restarted_mid_load_resumes_from_the_live_objects(box, clean, caplog):
    spec = stack_spec()
    ensure_ray_service.fn(box.kube, spec)
    with pytest.raises(WaitTimedOut):              # the first run is killed by its deadline mid-load
        wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock, settings=WaitSettings(timeout_s=45))
    # the flow restarts a little later (a Prefect retry), when the model is downloading
    wait_for(lambda: app_status(box.ctx.store) == "DEPLOYING", what="the Serve app to be deploying")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasks"):
        look = wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock)
    assert look.state is State.READY
    first = next(r.getMessage() for r in caplog.records if r.name == "tasks.ray_service_wait")
    assert re.search(r": (weight-download|engine-start|serve-running): ", first), first


def test_an_invalid_rayservice_is_rejected_by_the_api_server_naming_the_field(box):
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayService",
                "metadata": {"name": "broken", "namespace": "default"},
                "spec": {"serveConfigV2": 42, "rayClusterConfig": {"headGroupSpec": {}}}}
    with pytest.raises(KubeRejected, match=r"RayService default/broken was rejected \(HTTP 422\).*serveConfigV2"):
        box.kube.apply(manifest)
    assert box.kube.get(RAY_SERVICE, "broken", "default") is None


def test_a_missing_serving_namespace_is_created_and_its_rayservice_deleted_cleanly(box):
    spec = stack_spec(serving={"namespace": "llm"})
    result = ensure_ray_service.fn(box.kube, spec)
    namespace = box.kube.get(NAMESPACE, "llm")
    assert namespace["metadata"]["labels"]["managed-by"] == "gke-llm-flows"
    assert result.action.value == "create" and box.kube.get(RAY_SERVICE, "deepseek-r1", "llm") is not None
    assert delete_ray_service.fn(box.kube, spec, clock=box.clock) is True
    assert box.kube.get(RAY_SERVICE, "deepseek-r1", "llm") is None


def test_a_gpu_node_lost_mid_load_with_no_replacement_fails_naming_the_stranded_pod(box, clean):
    spec = stack_spec()
    ensure_ray_service.fn(box.kube, spec)

    def lose_a_gpu_node_once_downloading():
        wait_for(lambda: app_status(box.ctx.store) == "DEPLOYING", what="the download to start", timeout_s=60)
        box.inject({"kind": "node_lost", "node_prefix": "gke-kuberay-gpu-cluster-gpu-node-pool", "times": 1})

    saboteur = threading.Thread(target=lose_a_gpu_node_once_downloading)
    saboteur.start()
    try:
        with pytest.raises(RolloutFailed) as failure:
            wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock)
    finally:
        saboteur.join()
        box.add_gpu_nodes(2)                       # the lost node comes back for later tests
    assert re.search(r"pod default/deepseek-r1-\w+-gpu-group-worker-\w+ is unschedulable", str(failure.value))
    assert "no GPU capacity is coming" in str(failure.value)

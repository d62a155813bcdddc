"""Every fault surfaces where a real cluster shows it: pod state, events, RayCluster/RayService status."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.sandbox_kuberay.conftest import (
    DEPLOYMENTS,
    RAYSERVICES,
    add_guide_nodes,
    call_service,
    condition,
    container_state,
    events,
    install_crds,
    install_operator,
    is_serving,
    make_sim,
    pods,
    sample_rayservice,
    stop_sim,
    waiting_reason,
)


@pytest.fixture
def sim():
    simulation = make_sim(3000)
    yield simulation
    stop_sim(simulation)


def start(sim, rayservice=None):
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, rayservice or sample_rayservice())


def pending_head_ready(sim):
    status = (sim.rayservice().get("status") or {}).get("pendingServiceStatus") or {}
    return condition({"status": status.get("rayClusterStatus") or {}}, "HeadPodReady")


def pending_app(sim):
    status = (sim.rayservice().get("status") or {}).get("pendingServiceStatus") or {}
    return (status.get("applicationStatuses") or {}).get("llm_app") or {}


def head(sim):
    return next(iter(pods(sim, "ray.io/node-type=head")), None)


def test_image_pull_backoff_shows_on_the_pod_events_and_head_pod_ready(sim):
    sim.ctx.faults.add({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1"})
    start(sim)
    sim.wait_for(lambda: pending_head_ready(sim).get("reason") in ("ImagePullBackOff", "ErrImagePull"),
                 what="HeadPodReady reason ImagePullBackOff")
    sim.wait_for(lambda: waiting_reason(head(sim)) == "ImagePullBackOff", what="head waiting ImagePullBackOff")
    failed = [e["message"] for e in events(sim, "Failed")]
    assert any(m.startswith('Failed to pull image "rayproject/ray-llm:2.52.0-py311-cu128"') for m in failed)
    assert any(e["message"].startswith("Back-off pulling image") for e in events(sim, "BackOff"))
    assert not is_serving(sim.rayservice())


def test_a_counted_pull_fault_fails_that_many_pulls_then_the_pod_runs(sim):
    sim.ctx.faults.add({"kind": "image_pull_backoff", "pod_prefix": "deepseek-r1-", "times": 2})
    start(sim)
    running = sim.wait_for(lambda: (h := head(sim)) and h["status"].get("phase") == "Running" and h,
                           what="head Running after two failed pulls")
    assert container_state(running)["restartCount"] == 0
    assert len([e for e in events(sim, "Failed") if "Failed to pull image" in e["message"]]) >= 1


def test_crashloop_shows_crashloopbackoff_restarts_and_head_pod_ready_reason(sim):
    sim.ctx.faults.add({"kind": "crashloop", "pod_prefix": "deepseek-r1"})
    start(sim)
    sim.wait_for(lambda: (h := head(sim)) and container_state(h).get("restartCount", 0) >= 2
                 and waiting_reason(h) == "CrashLoopBackOff", what="head crash-looping")
    sim.wait_for(lambda: pending_head_ready(sim).get("reason") == "CrashLoopBackOff",
                 what="HeadPodReady reason CrashLoopBackOff")
    terminated = container_state(head(sim))["lastState"]["terminated"]
    assert terminated["reason"] == "Error" and terminated["exitCode"] == 1
    assert any("Back-off restarting failed container ray-head" in e["message"] for e in events(sim, "BackOff"))


def test_oom_killed_workers_show_exit_137_and_the_app_never_runs(sim):
    sim.ctx.faults.add({"kind": "oom_killed"})
    start(sim)
    worker = sim.wait_for(lambda: next((w for w in pods(sim, "ray.io/node-type=worker")
                                        if container_state(w).get("restartCount", 0) >= 1), None),
                          what="a worker restarted")
    terminated = container_state(worker)["lastState"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert head(sim)["status"]["containerStatuses"][0]["restartCount"] == 0   # only workers
    sim.wait_for(lambda: pending_app(sim).get("status") == "DEPLOYING", what="app deploying")
    sim.ctx.clock.sleep(2400)   # longer than a normal load
    assert pending_app(sim)["status"] == "DEPLOYING" and not is_serving(sim.rayservice())


def test_deploy_failed_shows_a_traceback_in_the_deployment_status(sim):
    sim.ctx.faults.add({"kind": "deploy_failed"})
    start(sim)
    app = sim.wait_for(lambda: (a := pending_app(sim)).get("status") == "DEPLOY_FAILED" and a, what="DEPLOY_FAILED",
                       timeout_s=30)
    server = app["serveDeploymentStatuses"]["LLMServer:deepseek"]
    assert server["status"] == "DEPLOY_FAILED" and "Traceback (most recent call last)" in server["message"]
    assert app["message"] == "Failed to update the deployments ['LLMServer:deepseek']."
    assert condition(sim.rayservice(), "Ready")["reason"] == "Initializing"


def test_a_wrong_model_source_fails_the_app_with_hugging_faces_404(sim):
    service = sample_rayservice()
    service["spec"]["serveConfigV2"] = service["spec"]["serveConfigV2"].replace(
        "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R2-does-not-exist")
    start(sim, service)
    app = sim.wait_for(lambda: (a := pending_app(sim)).get("status") == "DEPLOY_FAILED" and a, what="DEPLOY_FAILED",
                       timeout_s=30)
    assert "RepositoryNotFoundError" in app["serveDeploymentStatuses"]["LLMServer:deepseek"]["message"]


def test_a_wrong_import_path_fails_the_app_before_any_deployment(sim):
    service = sample_rayservice()
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    config["applications"][0]["import_path"] = "ray.serve.lm:build_openai_app"
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    start(sim, service)
    app = sim.wait_for(lambda: (a := pending_app(sim)).get("status") == "DEPLOY_FAILED" and a, what="DEPLOY_FAILED")
    assert "ModuleNotFoundError: No module named 'ray.serve.lm'" in app["message"]
    assert "serveDeploymentStatuses" not in app


@pytest.mark.parametrize("kind", ["no_gpu_capacity", "unschedulable"])
def test_no_gpu_capacity_leaves_workers_unschedulable_and_serve_waiting_for_resources(sim, kind):
    sim.ctx.faults.add({"kind": kind})
    start(sim)
    app = sim.wait_for(lambda: (a := pending_app(sim)) and "taken more than 30s to be scheduled" in str(a) and a,
                       what="Serve's scheduling message")
    assert app["status"] == "DEPLOYING"
    assert app["serveDeploymentStatuses"]["LLMServer:deepseek"]["status"] == "UPDATING"
    for worker in pods(sim, "ray.io/node-type=worker"):
        scheduled = condition(worker, "PodScheduled")
        assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert any("Insufficient nvidia.com/gpu" in e["message"] for e in events(sim, "FailedScheduling"))


def test_a_stalled_download_keeps_the_app_deploying_with_serves_slow_init_message(sim):
    sim.ctx.faults.add({"kind": "stalled_download"})
    start(sim)
    sim.wait_for(lambda: "taken more than 30s to initialize" in str(pending_app(sim)), what="slow-init message")
    sim.ctx.clock.sleep(3600)   # twice the normal load time
    assert pending_app(sim)["status"] == "DEPLOYING" and not is_serving(sim.rayservice())


def test_a_slow_download_delays_serving_by_the_factor(sim):
    sim.ctx.faults.add({"kind": "slow_download", "factor": 2})
    t0 = sim.ctx.clock.elapsed_s()
    start(sim)
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving", timeout_s=30)
    minutes = (sim.ctx.clock.elapsed_s() - t0) / 60
    assert minutes > 40, minutes   # 688 GB at 700 MB/s is ~16 min; twice that adds ~16 min to ~30


def test_operator_crashloop_leaves_rayservices_untouched(sim):
    sim.ctx.faults.add({"kind": "operator_crashloop"})
    start(sim)
    operator = sim.wait_for(lambda: next((p for p in pods(sim, "app.kubernetes.io/name=kuberay")
                                          if waiting_reason(p) == "CrashLoopBackOff"), None),
                            what="operator CrashLoopBackOff")
    assert container_state(operator)["lastState"]["terminated"]["exitCode"] == 1
    deployment = sim.store.get(DEPLOYMENTS, "default", "kuberay-operator")
    assert condition(deployment, "Available")["status"] == "False"
    rs = sim.rayservice()
    assert not rs.get("status") and not rs["metadata"].get("finalizers")


def test_a_missing_crd_makes_the_operator_crash_loop_after_the_cache_sync_timeout(sim):
    install_crds(sim, ("rayclusters", "rayservices"))   # no RayJob CRD (kuberay#538)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())
    sim.wait_for(lambda: any(container_state(p).get("restartCount", 0) >= 1
                             for p in pods(sim, "app.kubernetes.io/name=kuberay")), what="operator restart")
    assert sim.ctx.clock.elapsed_s() > 120
    assert not sim.rayservice().get("status")
    install_crds(sim, ("rayjobs",))
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving once the CRD exists", timeout_s=30)


def test_the_initializing_timeout_annotation_deletes_the_clusters_for_good(sim):
    service = sample_rayservice()
    service["metadata"]["annotations"] = {"ray.io/initializing-timeout": "10m"}
    sim.ctx.faults.add({"kind": "stalled_download"})
    start(sim, service)
    rs = sim.wait_for(lambda: (r := sim.rayservice()) and condition(r, "Ready").get("reason") == "InitializingTimeout"
                      and r, what="InitializingTimeout")
    assert condition(rs, "Ready")["status"] == "False" and "600s" in condition(rs, "Ready")["message"]
    sim.wait_for(lambda: not sim.store.list(("ray.io", "rayclusters"))[0], what="clusters deleted")
    sim.ctx.clock.sleep(600)
    assert not sim.store.list(("ray.io", "rayclusters"))[0]


@pytest.mark.parametrize(("old", "new"), [('accelerator_type: "H100"', 'accelerator_type: "A100-80G"'),
                                          ("tensor_parallel_size: 8", "tensor_parallel_size: 16")])
def test_serve_reads_the_config_a_replica_that_fits_no_gpus_waits_to_be_scheduled(sim, old, new):
    service = sample_rayservice()
    service["spec"]["serveConfigV2"] = service["spec"]["serveConfigV2"].replace(old, new)
    start(sim, service)
    sim.wait_for(lambda: [(w.get("status") or {}).get("phase") for w in pods(sim, "ray.io/node-type=worker")]
                 == ["Running", "Running"], what="workers running")
    sim.ctx.clock.sleep(2400)
    assert "taken more than 30s to be scheduled" in str(pending_app(sim))
    assert pending_app(sim)["status"] == "DEPLOYING" and not is_serving(sim.rayservice())


def test_a_node_type_fault_crashes_only_the_workers_and_leaves_the_head_running(sim):
    sim.ctx.faults.add({"kind": "crashloop", "node_type": "worker"})
    start(sim)
    sim.wait_for(lambda: all(container_state(w).get("restartCount", 0) >= 1
                             for w in pods(sim, "ray.io/node-type=worker")) and pods(sim, "ray.io/node-type=worker"),
                 what="workers restarting")
    assert container_state(head(sim))["restartCount"] == 0
    assert pending_head_ready(sim)["status"] == "True"


def test_disk_full_evicts_workers_and_kuberay_silently_recreates_them(sim):
    sim.ctx.faults.add({"kind": "disk_full"})
    start(sim)
    first = sim.wait_for(lambda: [w for w in pods(sim, "ray.io/node-type=worker")
                                  if (w.get("status") or {}).get("reason") == "Evicted"], what="an evicted worker")
    assert first[0]["status"]["phase"] == "Failed"
    assert "low on resource: ephemeral-storage" in first[0]["status"]["message"]
    sim.wait_for(lambda: any("ephemeral-storage" in e["message"] for e in events(sim, "Evicted")),
                 what="the kubelet's Evicted event")
    evicted = {p["metadata"]["name"] for p in first}
    sim.wait_for(lambda: any(e["message"].startswith("Deleted Pod") for e in events(sim, "DeletedPod")),
                 what="KubeRay deleting the Failed pod")
    sim.wait_for(lambda: len({w["metadata"]["name"] for w in pods(sim, "ray.io/node-type=worker")} - evicted) >= 2,
                 what="replacement workers")
    assert pending_app(sim).get("status") == "DEPLOYING" and not is_serving(sim.rayservice())


def test_the_dashboards_node_summary_shows_the_disk_filling_during_the_download(sim):
    start(sim)
    sim.wait_for(lambda: "taken more than 30s to initialize" in str(pending_app(sim)), what="download under way")
    cluster = sim.rayservice()["status"]["pendingServiceStatus"]["rayClusterName"]

    def worker_disk_used():
        reply = call_service(sim, f"{cluster}-head-svc", 8265, "GET", "/nodes", query="view=summary")
        nodes = json.loads(reply.body)["data"]["summary"]
        return max(n["disk"]["/"]["used"] for n in nodes if not n["raylet"]["isHeadNode"])
    first = worker_disk_used()
    sim.ctx.clock.sleep(300)
    assert worker_disk_used() > first + 100e9      # ~700 MB/s for 5 minutes


def test_an_overlong_name_fails_validation_as_upstream(sim):
    service = sample_rayservice()
    service["metadata"]["name"] = "deepseek-r1-" + "x" * 40
    start(sim, service)
    rs = sim.wait_for(lambda: (r := sim.rayservice(service["metadata"]["name"]))
                      and condition(r, "Ready").get("reason") == "ValidationFailed" and r, what="ValidationFailed")
    assert "no more than 47 characters" in condition(rs, "Ready")["message"]
    sim.wait_for(lambda: events(sim, "InvalidRayServiceMetadata"), what="InvalidRayServiceMetadata event")
    assert not sim.store.list(("ray.io", "rayclusters"))[0]


def test_an_unparsable_serve_config_is_reported_in_an_event(sim):
    service = sample_rayservice()
    service["spec"]["serveConfigV2"] = "applications: [unclosed"
    start(sim, service)
    event = sim.wait_for(lambda: events(sim, "FailedToUpdateServeApplications"), what="the failure event")[0]
    assert event["type"] == "Warning" and "Failed to update serve applications" in event["message"]
    assert not pending_app(sim)

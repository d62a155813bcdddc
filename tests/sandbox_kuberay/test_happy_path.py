"""The guide's RayService on the guide's cluster reaches the guide's status, in order, in simulated time."""

from __future__ import annotations

import json
import threading

import pytest

from sandbox.kube.controllers.nodes import GPU_TAINT
from tests.sandbox_kuberay.conftest import (
    PODS,
    RAYSERVICES,
    SERVICES,
    add_guide_nodes,
    call_service,
    condition,
    events,
    install_crds,
    install_operator,
    is_serving,
    make_sim,
    pods,
    sample_rayservice,
    stop_sim,
)

BOX_PUZZLE = ("I have four boxes. I put the red box on the bottom and put the blue box on top. Then I put the "
              "yellow box on top the blue. Then I take the blue box out and put it on top. And finally I put the "
              "green box on the top. Give me the final order of the boxes from bottom to top. Show your reasoning "
              "but be brief")


class Timeline:
    """First simulated time at which each milestone was seen in the store's change feed."""

    def __init__(self, sim):
        self.sim, self.at, self._lock = sim, {}, threading.Lock()
        self.unsubscribe = sim.store.subscribe(self._on_event)

    def mark(self, name):
        with self._lock:
            self.at.setdefault(name, self.sim.ctx.clock.elapsed_s())

    def _on_event(self, event):
        obj = event.object
        name = obj["metadata"]["name"]
        if event.resource == SERVICES and event.type == "ADDED":
            self.mark(f"service {name}")
        elif event.resource == RAYSERVICES:
            status = obj.get("status") or {}
            for key in ("pendingServiceStatus", "activeServiceStatus"):
                for app in ((status.get(key) or {}).get("applicationStatuses") or {}).values():
                    self.mark(f"{key} {app['status']}")
            if condition(obj, "Ready").get("status") == "True":
                self.mark("Ready")
        elif event.resource == PODS and "-head-" in name and (obj.get("status") or {}).get("phase") == "Running":
            self.mark("head Running")
        elif event.resource == ("", "events"):
            self.mark(f"event {obj['reason']}")


@pytest.fixture(scope="module")
def serving():
    """One cluster brought up once for the read-only tests of this module (at a moderate time scale,
    so that a busy CI machine's scheduling hiccups add little simulated time to the measured load)."""
    sim = make_sim(600)
    timeline = Timeline(sim)
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    start = sim.ctx.clock.elapsed_s()
    sim.store.create(RAYSERVICES, sample_rayservice())
    rs = sim.wait_for(lambda: (r := sim.rayservice()) and is_serving(r) and r, what="serving", timeout_s=30)
    timeline.unsubscribe()
    yield sim, rs, timeline, start
    stop_sim(sim)


def test_sample_rayservice_reaches_the_guides_running_status(serving):
    _, rs, _, _ = serving
    app = rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"]
    assert app["status"] == "RUNNING"
    # Ray 2.52 (the sample's image) names the deployments as current Ray Serve LLM does.
    assert {k: v["status"] for k, v in app["serveDeploymentStatuses"].items()} == {
        "LLMServer:deepseek": "HEALTHY", "OpenAiIngress": "HEALTHY"}
    assert condition(rs, "Ready")["reason"] == "NonZeroServeEndpoints"
    assert condition(rs, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    assert rs["status"]["serviceStatus"] == "Running"
    assert rs["status"]["numServeEndpoints"] == 2            # the head and the worker hosting the replica
    assert rs["status"]["pendingServiceStatus"] == {}
    assert rs["metadata"]["finalizers"] == ["ray.io/rayservice-finalizer"]


def test_the_load_takes_the_guides_twenty_to_thirty_odd_minutes_in_simulated_time(serving):
    _, _, timeline, start = serving
    minutes = (timeline.at["Ready"] - start) / 60
    # Driver install (4.5 min) + image pull (3 min) + download (16 min) + engine (6 min): within the
    # guide's "20-30 minutes" once the GPU nodes' drivers are in.
    assert 20 <= minutes <= 38, minutes


def test_milestones_come_in_upstream_order(serving):
    _, _, timeline, _ = serving
    at = timeline.at
    assert at["event CreatedRayCluster"] < at["head Running"] < at["event UpdatedServeApplications"]
    # During the load the apps live under pendingServiceStatus; the RayService's own services come only
    # once every app runs (the pass that sees RUNNING creates them and promotes the cluster).
    assert at["pendingServiceStatus DEPLOYING"] < at["service deepseek-r1-serve-svc"]
    assert "activeServiceStatus DEPLOYING" not in at
    assert at["service deepseek-r1-head-svc"] <= at["activeServiceStatus RUNNING"] <= at["Ready"]
    # GPU workers waited for the driver: the scheduler said so first.
    assert at["event FailedScheduling"] < at["event UpdatedServeApplications"]


def test_cluster_objects_carry_kuberays_names_labels_and_owners(serving):
    sim, rs, _, _ = serving
    cluster_name = rs["status"]["activeServiceStatus"]["rayClusterName"]
    assert cluster_name.startswith("deepseek-r1-") and len(cluster_name) == len("deepseek-r1-") + 5
    cluster = sim.store.get(("ray.io", "rayclusters"), "default", cluster_name)
    assert cluster["metadata"]["labels"] == {"ray.io/originated-from-cr-name": "deepseek-r1",
                                             "ray.io/originated-from-crd": "RayService"}
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    head = pods(sim, f"ray.io/cluster={cluster_name},ray.io/node-type=head")[0]
    workers = pods(sim, f"ray.io/cluster={cluster_name},ray.io/group=gpu-group")
    assert head["metadata"]["name"].startswith(f"{cluster_name}-head-")
    assert head["metadata"]["labels"]["ray.io/serve"] == "true"
    assert sorted(w["metadata"]["name"].rsplit("-", 1)[0] for w in workers) == [f"{cluster_name}-gpu-group-worker"] * 2
    # With PP=2 across two workers, the one without the Serve replica stays unready, as upstream.
    assert sorted(condition(w, "Ready")["status"] for w in workers) == ["False", "True"]
    serve = sim.store.get(SERVICES, "default", "deepseek-r1-serve-svc")
    assert serve["spec"]["selector"] == {"ray.io/cluster": cluster_name, "ray.io/serve": "true"}
    assert [p["port"] for p in serve["spec"]["ports"]] == [8000]
    assert sim.store.get(SERVICES, "default", "deepseek-r1-head-svc")["spec"]["clusterIP"] == "None"
    assert sim.store.get(SERVICES, "default", f"{cluster_name}-head-svc") is not None
    assert rs["status"]["activeServiceStatus"]["rayClusterStatus"]["desiredGPU"] == "16"


def test_gpu_nodes_have_gkes_labels_taint_and_allocatable_gpus(serving):
    sim, _, _, _ = serving
    nodes = {n["metadata"]["name"]: n for n in sim.store.list(("", "nodes"))[0]}
    gpu = next(n for name, n in nodes.items() if "gpu-node-pool" in name)
    labels = gpu["metadata"]["labels"]
    assert labels["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"
    assert labels["cloud.google.com/gke-nodepool"] == "gpu-node-pool"
    assert labels["node.kubernetes.io/instance-type"] == "a3-highgpu-8g"
    assert labels["topology.kubernetes.io/zone"] == "us-east5-a"
    assert labels["cloud.google.com/gke-gpu-driver-version"] == "default"
    assert GPU_TAINT in gpu["spec"]["taints"]
    assert gpu["status"]["capacity"]["cpu"] == "208" and gpu["status"]["capacity"]["memory"] == f"{1872 * 1024}Mi"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    cpu = next(n for name, n in nodes.items() if "default-pool" in name)
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"] and not cpu["spec"]["taints"]
    assert cpu["metadata"]["labels"]["cloud.google.com/gke-image-streaming"] == "true"


def test_workers_were_unschedulable_until_the_gpu_driver_was_in(serving):
    sim, _, _, _ = serving
    messages = {e["message"] for e in events(sim, "FailedScheduling")}
    assert ("0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 3 Insufficient nvidia.com/gpu. "
            "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.") in messages


def test_endpoint_lists_the_model_and_solves_the_box_puzzle(serving):
    sim, _, _, _ = serving
    models = call_service(sim, "deepseek-r1-serve-svc", 8000, "GET", "/v1/models")
    assert models.status == 200 and [m["id"] for m in json.loads(models.body)["data"]] == ["deepseek"]
    before = sim.ctx.clock.elapsed_s()
    reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                         {"model": "deepseek", "messages": [{"role": "user", "content": BOX_PUZZLE}],
                          "temperature": 0.7})
    took = sim.ctx.clock.elapsed_s() - before
    assert reply.status == 200
    body = json.loads(reply.body)
    assert body["object"] == "chat.completion" and body["model"] == "deepseek" and body["id"].startswith("deepseek-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    reasoning, answer = choice["message"]["content"].split("</think>")
    assert reasoning and "red, yellow, blue, green" in answer
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 100
    assert took >= usage["completion_tokens"] / 30     # decode rate from the profile


def test_endpoint_answers_404_with_an_openai_error_for_an_unknown_model(serving):
    sim, _, _, _ = serving
    reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                         {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 404
    assert json.loads(reply.body)["error"] == {"message": "The model `gpt-4` does not exist.",
                                               "type": "NotFoundError", "param": None, "code": 404}


def test_generic_prompts_get_a_generic_answer_and_max_tokens_truncates(serving):
    sim, _, _, _ = serving
    reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                         {"model": "deepseek", "messages": [{"role": "user", "content": "What is Kubernetes?"}],
                          "max_tokens": 5})
    choice = json.loads(reply.body)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert json.loads(reply.body)["usage"]["completion_tokens"] == 5


def test_scheduler_names_untolerated_taints_and_missing_resources():
    sim = make_sim(1500)
    try:
        add_guide_nodes(sim)
        sim.store.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "namespace": "default"},
                                "spec": {"containers": [{"name": "c", "image": "busybox",
                                                         "resources": {"requests": {"cpu": "20"}}}]}})
        pod = sim.wait_for(lambda: (p := sim.store.get(PODS, "default", "big")) and condition(p, "PodScheduled")
                           and p, what="scheduling attempt")
        assert condition(pod, "PodScheduled") | {"lastTransitionTime": None} == {
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": None,
            "message": "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint "
                       "{nvidia.com/gpu: present}. preemption: 0/3 nodes are available: 1 No preemption victims "
                       "found for incoming pod, 2 Preemption is not helpful for scheduling."}
    finally:
        stop_sim(sim)


def test_wrong_answer_fault_gets_the_puzzle_wrong(serving):
    sim, _, _, _ = serving
    sim.ctx.faults.add({"kind": "wrong_answer", "times": 1})
    reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                         {"model": "deepseek", "messages": [{"role": "user", "content": BOX_PUZZLE}]})
    answer = json.loads(reply.body)["choices"][0]["message"]["content"].split("</think>")[1]
    assert reply.status == 200 and "red, yellow, blue, green" not in answer


def test_slow_answer_fault_adds_its_seconds_to_each_answer(serving):
    sim, _, _, _ = serving
    sim.ctx.faults.add({"kind": "slow_answer", "seconds": 120})
    try:
        before = sim.ctx.clock.elapsed_s()
        reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                             {"model": "deepseek", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status == 200 and sim.ctx.clock.elapsed_s() - before >= 120
    finally:
        sim.ctx.faults.clear("slow_answer")


def test_the_dashboards_serve_api_answers_through_the_per_cluster_head_service(serving):
    sim, rs, _, _ = serving
    cluster = rs["status"]["activeServiceStatus"]["rayClusterName"]
    reply = call_service(sim, f"{cluster}-head-svc", 8265, "GET", "/api/serve/applications/")
    apps = json.loads(reply.body)["applications"]
    assert reply.status == 200 and apps["llm_app"]["status"] == "RUNNING"
    assert apps["llm_app"]["deployed_app_config"]["import_path"] == "ray.serve.llm:build_openai_app"

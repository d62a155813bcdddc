"""Deployments, node pool removal and the older Ray version's naming, end to end on the store."""

from __future__ import annotations

from sandbox.kube.controllers import remove_node_pool_nodes
from tests.sandbox_kuberay.conftest import (
    DEPLOYMENTS,
    PODS,
    RAYSERVICES,
    add_guide_nodes,
    condition,
    container_state,
    events,
    install_crds,
    install_operator,
    is_serving,
    pods,
    sample_rayservice,
)


def test_a_deployment_gets_a_replicaset_and_a_ready_pod_then_becomes_available(sim):
    add_guide_nodes(sim)
    install_operator(sim)
    deployment = sim.wait_for(lambda: (d := sim.store.get(DEPLOYMENTS, "default", "kuberay-operator"))
                              and condition(d, "Available").get("status") == "True" and d, what="Available")
    assert deployment["status"]["availableReplicas"] == deployment["status"]["readyReplicas"] == 1
    assert condition(deployment, "Progressing")["reason"] == "NewReplicaSetAvailable"
    (pod,) = pods(sim, "app.kubernetes.io/name=kuberay")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert pod["spec"]["nodeName"].startswith("gke-kuberay-gpu-cluster-default-pool")   # GPU nodes are tainted
    assert container_state(pod)["state"]["running"]
    reasons = [e["reason"] for e in events(sim) if e["involvedObject"]["name"] == pod["metadata"]["name"]]
    assert reasons[:4] == ["Scheduled", "Pulling", "Pulled", "Created"]


def test_a_template_change_rolls_to_a_new_replicaset(sim):
    add_guide_nodes(sim)
    install_operator(sim)
    sim.wait_for(lambda: len(pods(sim, "app.kubernetes.io/name=kuberay")) == 1, what="first pod")
    sim.store.mutate(DEPLOYMENTS, "default", "kuberay-operator", lambda d: d["spec"]["template"]["spec"]["containers"][0]
                     .__setitem__("image", "quay.io/kuberay/operator:v1.6.2"))
    sim.wait_for(lambda: [p["spec"]["containers"][0]["image"] for p in pods(sim, "app.kubernetes.io/name=kuberay")
                          if not p["metadata"].get("deletionTimestamp")] == ["quay.io/kuberay/operator:v1.6.2"],
                 what="pod of the new template")
    assert any("Scaled down replica set" in e["message"] for e in events(sim, "ScalingReplicaSet"))


def test_deleting_a_node_pool_fails_its_pods_and_kuberay_replaces_them(sim):
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())
    sim.wait_for(lambda: len([w for w in pods(sim, "ray.io/node-type=worker") if w["spec"].get("nodeName")]) == 2,
                 what="workers bound")
    before = {w["metadata"]["name"] for w in pods(sim, "ray.io/node-type=worker")}
    remove_node_pool_nodes(sim.ctx, "gpu-node-pool")
    assert all(w["status"]["phase"] == "Failed" and condition(w, "DisruptionTarget")["reason"] == "DeletionByPodGC"
               for w in pods(sim, "ray.io/node-type=worker") if w["metadata"]["name"] in before)
    replaced = sim.wait_for(lambda: (ws := pods(sim, "ray.io/node-type=worker")) and len(ws) == 2
                            and not {w["metadata"]["name"] for w in ws} & before and ws, what="replacement workers")
    assert all(condition(w, "PodScheduled").get("reason") == "Unschedulable" for w in replaced
               if condition(w, "PodScheduled"))


def test_a_ray_246_image_reports_the_guides_deployment_names(sim):
    service = sample_rayservice()
    config = service["spec"]["rayClusterConfig"]
    for group in [config["headGroupSpec"]] + config["workerGroupSpecs"]:
        group["template"]["spec"]["containers"][0]["image"] = "rayproject/ray-llm:2.46.0-py311-cu124"
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, service)
    rs = sim.wait_for(lambda: (r := sim.rayservice()) and is_serving(r) and r, what="serving", timeout_s=30)
    app = rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"]
    assert sorted(app["serveDeploymentStatuses"]) == ["LLMDeployment:deepseek", "LLMRouter"]
    assert sim.store.get(PODS, "default", rs["status"]["activeServiceStatus"]["rayClusterStatus"]["head"]["podName"])


def test_image_streaming_nodes_start_the_ray_image_in_seconds_and_others_pull_it(sim):
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())
    sim.wait_for(lambda: len([e for e in events(sim, "Pulled") if "ray-llm" in e["message"]]) >= 3,
                 what="ray images pulled")
    pulled = {e["involvedObject"]["name"]: e["message"] for e in events(sim, "Pulled") if "ray-llm" in e["message"]}
    head = next(m for name, m in pulled.items() if "-head-" in name)
    worker = next(m for name, m in pulled.items() if "-worker-" in name)
    # The CPU pool has Image streaming (the guide's --enable-image-streaming); the GPU pool here does not.
    assert " in 10s (" in head and "Image size: 10500000000 bytes." in head
    assert " in 2m58s (" in worker

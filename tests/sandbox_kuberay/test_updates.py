"""Spec changes and deletion behave as KubeRay v1.7.0: in-place Serve updates, blue/green cluster
changes, node loss while serving, and deletion through the finalizer."""

from __future__ import annotations

import json

import pytest

from sandbox.kube.controllers import add_node_pool_nodes
from tests.sandbox_kuberay.conftest import (
    CPU_POOL,
    GPU_POOL,
    RAYSERVICES,
    SERVICES,
    bring_up,
    call_service,
    condition,
    events,
    is_serving,
    make_sim,
    pods,
    stop_sim,
)

RAYCLUSTERS = ("ray.io", "rayclusters")


@pytest.fixture
def sim():
    simulation = make_sim(3000)
    yield simulation
    stop_sim(simulation)


def patch_spec(sim, change):
    sim.store.mutate(RAYSERVICES, "default", "deepseek-r1", lambda rs: change(rs["spec"]))
    return sim.rayservice()["metadata"]["generation"]


def active(rs):
    return rs["status"]["activeServiceStatus"]


def test_a_serve_config_change_updates_the_same_cluster_in_place(sim):
    rs = bring_up(sim)
    cluster = active(rs)["rayClusterName"]
    generation = patch_spec(sim, lambda spec: spec.__setitem__(
        "serveConfigV2", spec["serveConfigV2"].replace("max_num_seqs: 40", "max_num_seqs: 32")))
    sim.wait_for(lambda: (r := sim.rayservice())["status"].get("observedGeneration") == generation
                 and active(r)["applicationStatuses"]["llm_app"]["status"] == "DEPLOYING", what="app redeploying")
    after = sim.wait_for(lambda: (r := sim.rayservice()) and is_serving(r) and r, what="serving again")
    assert active(after)["rayClusterName"] == cluster and after["status"]["pendingServiceStatus"] == {}
    assert len(sim.store.list(RAYCLUSTERS, "default")[0]) == 1
    updated = [e for e in events(sim, "UpdatedServeApplications")]
    assert sum(e["count"] for e in updated) == 2


def test_a_cluster_config_change_rolls_out_blue_green_on_spare_capacity(sim):
    rs = bring_up(sim)
    add_node_pool_nodes(sim.ctx, GPU_POOL, ["gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-e5f6",
                                            "gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-g7h8"])
    # A second 32Gi head does not fit next to the first on one e2-standard-16 (~58 GiB allocatable).
    add_node_pool_nodes(sim.ctx, CPU_POOL, ["gke-kuberay-gpu-cluster-default-pool-1a2b3c4d-z9w8"])
    old = active(rs)["rayClusterName"]

    def new_env(spec):
        head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        head["env"] = [{"name": "RAY_SERVE_LOG_LEVEL", "value": "DEBUG"}]
    patch_spec(sim, new_env)
    upgrading = sim.wait_for(lambda: (r := sim.rayservice()) and condition(r, "UpgradeInProgress").get("status")
                             == "True" and r, what="UpgradeInProgress")
    assert condition(upgrading, "UpgradeInProgress")["reason"] == "BothActivePendingClustersExist"
    new = upgrading["status"]["pendingServiceStatus"]["rayClusterName"]
    assert new != old and new.startswith("deepseek-r1-")
    assert condition(upgrading, "Ready")["status"] == "True"          # the old cluster keeps serving
    done = sim.wait_for(lambda: (r := sim.rayservice()) and active(r)["rayClusterName"] == new and is_serving(r)
                        and r, what="promotion", timeout_s=30)
    assert condition(done, "UpgradeInProgress")["reason"] == "NoPendingCluster"
    serve = sim.store.get(SERVICES, "default", "deepseek-r1-serve-svc")
    assert serve["spec"]["selector"]["ray.io/cluster"] == new
    sim.wait_for(lambda: sim.store.get(RAYCLUSTERS, "default", old) is None, what="old cluster deleted after 60 s")
    assert json.loads(call_service(sim, "deepseek-r1-serve-svc", 8000, "GET", "/v1/models").body)["data"]


def test_without_capacity_for_a_second_cluster_the_pending_one_stays_pending(sim):
    rs = bring_up(sim)

    def new_image(spec):
        for group in [spec["rayClusterConfig"]["headGroupSpec"]] + spec["rayClusterConfig"]["workerGroupSpecs"]:
            group["template"]["spec"]["containers"][0]["image"] = "rayproject/ray-llm:2.53.0-py311-cu128"
    patch_spec(sim, new_image)
    pending = sim.wait_for(lambda: sim.rayservice()["status"]["pendingServiceStatus"].get("rayClusterName"),
                           what="pending cluster")
    sim.wait_for(lambda: len(workers := pods(sim, f"ray.io/cluster={pending},ray.io/node-type=worker")) == 2
                 and all(condition(w, "PodScheduled").get("reason") == "Unschedulable" for w in workers),
                 what="pending workers unschedulable")
    new_head = pods(sim, f"ray.io/cluster={pending},ray.io/node-type=head")[0]
    assert "Insufficient memory" in condition(new_head, "PodScheduled")["message"]   # two 32Gi heads, one e2-16
    sim.ctx.clock.sleep(1800)
    rs = sim.rayservice()
    assert active(rs)["rayClusterName"] != pending and condition(rs, "Ready")["status"] == "True"
    assert condition(rs, "UpgradeInProgress")["status"] == "True"


def test_worker_replica_changes_update_the_cluster_in_place(sim):
    rs = bring_up(sim)
    cluster = active(rs)["rayClusterName"]

    def three(spec):
        spec["rayClusterConfig"]["workerGroupSpecs"][0].update(replicas=3, minReplicas=3, maxReplicas=3)
    patch_spec(sim, three)
    sim.wait_for(lambda: len(pods(sim, f"ray.io/cluster={cluster},ray.io/node-type=worker")) == 3,
                 what="third worker")
    assert sim.rayservice()["status"]["pendingServiceStatus"].get("rayClusterName", "") == ""


def test_losing_a_gpu_node_while_serving_makes_the_app_unhealthy_and_the_worker_pending(sim):
    rs = bring_up(sim)
    sim.ctx.faults.add({"kind": "node_lost", "times": 1})
    sim.wait_for(lambda: len(sim.store.list(("", "nodes"))[0]) == 2, what="a node gone")
    sim.wait_for(lambda: events(sim, "RemovingNode"), what="the node controller's RemovingNode event")
    sim.wait_for(lambda: active(sim.rayservice())["applicationStatuses"]["llm_app"]["status"] == "UNHEALTHY",
                 what="app UNHEALTHY")
    cluster = active(rs)["rayClusterName"]
    sim.wait_for(lambda: any(condition(w, "PodScheduled").get("reason") == "Unschedulable"
                             for w in pods(sim, f"ray.io/cluster={cluster},ray.io/node-type=worker")),
                 what="replacement worker unschedulable")
    # Upstream: Ready stays True while the serve service has an endpoint (the head's proxy).
    rs = sim.rayservice()
    assert condition(rs, "Ready")["status"] == "True" and rs["status"]["numServeEndpoints"] >= 1
    reply = call_service(sim, "deepseek-r1-serve-svc", 8000, "POST", "/v1/chat/completions",
                         {"model": "deepseek", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 503 and json.loads(reply.body)["error"]["type"] == "ServiceUnavailableError"


def test_deleting_the_rayservice_deletes_its_clusters_pods_and_services_then_the_finalizer(sim):
    bring_up(sim)
    sim.store.delete(RAYSERVICES, "default", "deepseek-r1")
    sim.wait_for(lambda: sim.store.get(RAYSERVICES, "default", "deepseek-r1") is None, what="RayService gone")
    assert events(sim, "DeletedRayCluster")
    sim.wait_for(lambda: not sim.store.list(RAYCLUSTERS)[0] and not pods(sim, "ray.io/is-ray-node=yes")
                 and not [s for s in sim.store.list(SERVICES, "default")[0] if "deepseek" in s["metadata"]["name"]],
                 what="clusters, pods and services gone")


def test_losing_the_heads_node_drops_the_endpoints_to_zero_and_ready_to_false(sim):
    # A second CPU node: the scheduler spreads the operator and the head (LeastAllocated), so losing
    # the head's node leaves the operator up to report it.
    add_node_pool_nodes(sim.ctx, CPU_POOL, ["gke-kuberay-gpu-cluster-default-pool-1a2b3c4d-z9w8"])
    rs = bring_up(sim)
    head = pods(sim, "ray.io/node-type=head")[0]
    operator = pods(sim, "app.kubernetes.io/name=kuberay")[0]
    assert head["spec"]["nodeName"] != operator["spec"]["nodeName"]
    sim.ctx.faults.add({"kind": "node_lost", "node_prefix": head["spec"]["nodeName"], "times": 1})
    rs = sim.wait_for(lambda: (r := sim.rayservice()) and condition(r, "Ready").get("reason") == "ZeroServeEndpoints"
                      and r, what="Ready False ZeroServeEndpoints")
    assert condition(rs, "Ready")["status"] == "False" and rs["status"].get("numServeEndpoints", 0) == 0
    assert rs["status"]["activeServiceStatus"]["rayClusterStatus"]["conditions"][0]["type"] == "HeadPodReady"
    # KubeRay recreates the head on the node left; with no GCS fault tolerance Serve starts from scratch
    # (the operator re-PUTs the config to the new head), and the same cluster serves again.
    cluster = rs["status"]["activeServiceStatus"]["rayClusterName"]
    back = sim.wait_for(lambda: (r := sim.rayservice()) and is_serving(r) and r, what="serving again", timeout_s=30)
    assert back["status"]["activeServiceStatus"]["rayClusterName"] == cluster
    new_head = pods(sim, "ray.io/node-type=head")[0]
    assert new_head["metadata"]["name"] != head["metadata"]["name"]
    assert new_head["spec"]["nodeName"] == operator["spec"]["nodeName"]

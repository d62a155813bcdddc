"""The RayService classifier on status dicts shaped like KubeRay v1.7.0's (reference/kuberay.md)."""

from __future__ import annotations

import copy

import pytest

from tasks.ray_service_download import DiskTrend
from tasks.ray_service_readiness import Observation, Phase, classify_ray_service, readiness_summary
from tasks.waiting import State

CLUSTER = "deepseek-r1-x7k2p"


def ray_service(*, generation=1, observed=1, ready=("False", "Initializing"), endpoints=0,
                pending=None, active=None):
    status = {
        "conditions": [{"type": "Ready", "status": ready[0], "reason": ready[1], "message": "",
                        "observedGeneration": observed},
                       {"type": "UpgradeInProgress", "status": "False", "reason": "NoPendingCluster"}],
        "numServeEndpoints": endpoints,
        "observedGeneration": observed,
        "activeServiceStatus": active or {},
        "pendingServiceStatus": pending or {},
    }
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": "deepseek-r1", "namespace": "default", "generation": generation,
                         "labels": {"managed-by": "gke-llm-flows"}},
            "spec": {}, "status": status}


def apps(app_status="RUNNING", deps=(("LLMServer:deepseek", "HEALTHY"), ("OpenAiIngress", "HEALTHY")),
         message=""):
    return {"llm_app": {"status": app_status, "message": message,
                        "serveDeploymentStatuses": {d: {"status": s, "message": ""} for d, s in deps}}}


def cluster_status(apps_=None, head=("True", "HeadPodRunningAndReady"), extra_conditions=()):
    return {"rayClusterName": CLUSTER, "applicationStatuses": apps_ or {},
            "rayClusterStatus": {"conditions": [{"type": "HeadPodReady", "status": head[0], "reason": head[1],
                                                 "message": ""}, *extra_conditions]}}


def serving():
    return ray_service(ready=("True", "NonZeroServeEndpoints"), endpoints=1, active=cluster_status(apps()))


def pod(name, *, node_type="worker", phase="Running", node="gke-gpu-1", ready=True, waiting=None,
        last_terminated=None, restarts=0, scheduled=True, unschedulable_message=None):
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                   **({} if scheduled else {"reason": "Unschedulable", "message": unschedulable_message or ""})},
                  {"type": "Ready", "status": "True" if ready else "False"}]
    state = {"waiting": {"reason": waiting[0], "message": waiting[1]}} if waiting else {"running": {}}
    cs = {"name": "ray-worker" if node_type == "worker" else "ray-head", "image": "rayproject/ray-llm:2.52.0",
          "ready": ready, "restartCount": restarts, "state": state}
    if last_terminated:
        cs["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137}}
    return {"metadata": {"name": name, "namespace": "default",
                         "labels": {"ray.io/cluster": CLUSTER, "ray.io/node-type": node_type}},
            "spec": {"nodeName": node} if scheduled else {},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [cs] if scheduled else []}}


def head_pod(**kw):
    return pod(f"{CLUSTER}-head-abcde", node_type="head", node="gke-cpu-1", **kw)


def worker(i, **kw):
    return pod(f"{CLUSTER}-gpu-group-worker-{i}", **kw)


def classify(rs, pods=(), events=(), nodes=(), coming=False):
    return classify_ray_service(Observation(rs, list(pods), list(events), list(nodes), coming))


def test_a_serving_rayservice_is_ready_whatever_its_deployments_are_called():
    rs = serving()
    rs["status"]["activeServiceStatus"]["applicationStatuses"] = apps(
        deps=(("LLMDeployment:deepseek", "HEALTHY"), ("LLMRouter", "HEALTHY")))
    c = classify(rs, [head_pod(), worker(1), worker(2, ready=False)])
    assert c.look.state is State.READY
    assert "LLMRouter HEALTHY" in c.look.detail and c.phase is Phase.SERVE_RUNNING


@pytest.mark.parametrize("breaks, why", [
    (lambda s: s["status"].update(numServeEndpoints=0), "no endpoints"),
    (lambda s: s["metadata"].update(generation=2), "new generation not observed"),
    (lambda s: s["status"]["conditions"][0].update(status="False", reason="ZeroServeEndpoints"), "Ready False"),
    (lambda s: s["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"].update(status="DEPLOYING"),
     "app deploying"),
    (lambda s: s["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"]["serveDeploymentStatuses"]
     ["OpenAiIngress"].update(status="UPDATING"), "a deployment updating"),
    (lambda s: s["status"]["activeServiceStatus"].update(applicationStatuses={}), "no apps"),
    (lambda s: s["status"].update(pendingServiceStatus=cluster_status(apps("DEPLOYING"))), "upgrade pending"),
])
def test_readiness_needs_every_sign_of_section_0(breaks, why):
    rs = serving()
    breaks(rs)
    assert readiness_summary(rs) is None, why
    assert classify(rs).look.state is not State.READY, why


def test_first_load_reads_the_pending_status_and_reports_weight_download():
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),)),
                                            head=("True", "HeadPodRunningAndReady")))
    c = classify(rs, [head_pod(), worker(1), worker(2, ready=False)])
    assert c.look.state is State.PROGRESSING
    assert c.phase is Phase.WEIGHT_DOWNLOAD
    assert "llm_app DEPLOYING" in c.look.detail and c.suspect is None


def test_an_engine_message_means_engine_start():
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),),
                                                 message="Deployment is initializing the vLLM engine")))
    assert classify(rs, [head_pod(), worker(1)]).phase is Phase.ENGINE_START


def test_pods_waiting_for_containers_are_in_image_pull():
    rs = ray_service(pending=cluster_status(head=("False", "ContainersNotReady")))
    c = classify(rs, [head_pod(ready=False, waiting=("ContainerCreating", "")), worker(1, ready=False,
                                                                                      waiting=("PodInitializing", ""))])
    assert c.phase is Phase.IMAGE_PULL and c.look.state is State.PROGRESSING


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                    "CreateContainerConfigError"])
def test_a_fatal_container_state_on_any_pod_is_fatal_and_names_the_pod(reason):
    rs = ray_service(pending=cluster_status())
    c = classify(rs, [head_pod(), worker(1, ready=False, waiting=(reason, "back-off pulling image"))])
    assert c.look.state is State.FATAL
    assert reason in c.look.detail and f"{CLUSTER}-gpu-group-worker-1" in c.look.detail


def test_oom_killed_last_state_is_fatal_even_while_the_container_restarts():
    rs = ray_service(pending=cluster_status())
    c = classify(rs, [head_pod(), worker(1, last_terminated="OOMKilled", restarts=2)])
    assert c.look.state is State.FATAL
    assert "OOMKilled" in c.look.detail and "exit code 137" in c.look.detail


def test_head_pod_ready_reason_copied_by_the_operator_is_fatal_without_the_pods():
    rs = ray_service(pending=cluster_status(head=("False", "ImagePullBackOff")))
    c = classify(rs)
    assert c.look.state is State.FATAL and "ImagePullBackOff" in c.look.detail and CLUSTER in c.look.detail


def test_deploy_failed_app_is_fatal_with_serves_message():
    rs = ray_service(pending=cluster_status(apps("DEPLOY_FAILED", deps=(("LLMServer:deepseek", "UNHEALTHY"),),
                                                 message="RuntimeError: CUDA out of memory")))
    c = classify(rs, [head_pod(), worker(1)])
    assert c.look.state is State.FATAL
    assert "DEPLOY_FAILED" in c.look.detail and "CUDA out of memory" in c.look.detail


@pytest.mark.parametrize("reason", ["ValidationFailed", "InitializingTimeout"])
def test_terminal_ready_reasons_are_fatal(reason):
    rs = ray_service(ready=("False", reason))
    rs["status"]["conditions"][0]["message"] = "spec invalid"
    c = classify(rs)
    assert c.look.state is State.FATAL and reason in c.look.detail


def test_replica_failure_is_fatal():
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreateWorkerPod",
               "message": "exceeded quota"}
    c = classify(ray_service(pending=cluster_status(extra_conditions=[failure])))
    assert c.look.state is State.FATAL and "FailedCreateWorkerPod" in c.look.detail


def test_the_not_ready_pipeline_parallel_worker_is_harmless():
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),))))
    c = classify(rs, [head_pod(), worker(1), worker(2, ready=False)])
    assert c.look.state is State.PROGRESSING and c.suspect is None


def unschedulable_workers():
    msg = "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint."
    return [head_pod(), worker(1, scheduled=False, phase="Pending", ready=False, unschedulable_message=msg),
            worker(2, scheduled=False, phase="Pending", ready=False, unschedulable_message=msg)]


def gpu_node(allocatable="8", ready="True"):
    return {"metadata": {"name": "gke-gpu-1", "labels": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}},
            "status": {"allocatable": {"nvidia.com/gpu": allocatable},
                       "conditions": [{"type": "Ready", "status": ready}]}}


def test_unschedulable_gpu_pods_with_no_capacity_coming_are_a_suspect_naming_the_pod():
    c = classify(ray_service(pending=cluster_status()), unschedulable_workers())
    assert c.look.state is State.PROGRESSING and c.phase is Phase.GPU_NODES
    assert c.suspect and "Insufficient nvidia.com/gpu" in c.suspect and "worker-1" in c.suspect


@pytest.mark.parametrize("hint", ["caller", "node booting", "scale-up event"])
def test_unschedulable_pods_wait_quietly_while_gpu_capacity_is_coming(hint):
    rs, pods = ray_service(pending=cluster_status()), unschedulable_workers()
    nodes, events, coming = [], [], False
    if hint == "caller":
        coming = True
    elif hint == "node booting":
        nodes = [gpu_node(allocatable="0")]
    else:
        events = [{"reason": "TriggeredScaleUp", "involvedObject": {"name": pods[1]["metadata"]["name"]}}]
    c = classify(rs, pods, events, nodes, coming)
    assert c.phase is Phase.GPU_NODES and c.suspect is None
    assert "waiting for a node" in c.look.detail


def test_all_apps_running_but_endpoints_pending_is_the_last_phase():
    rs = ray_service(pending=cluster_status(apps()))
    c = classify(rs, [head_pod(), worker(1)])
    assert c.phase is Phase.SERVE_RUNNING and c.look.state is State.PROGRESSING


def test_a_missing_rayservice_is_fatal():
    assert classify(None).look.state is State.FATAL


def test_the_classifier_does_not_modify_its_input():
    rs, pods = ray_service(pending=cluster_status()), unschedulable_workers()
    before = copy.deepcopy((rs, pods))
    classify(rs, pods)
    assert (rs, pods) == before


def test_a_replica_that_cannot_be_placed_while_all_pods_run_is_a_suspect():
    message = ("Deployment 'LLMServer:deepseek' in application 'llm_app' has 1 replicas that have taken more "
               "than 30s to be scheduled. Resources required for each replica: {'GPU': 16}")
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),))))
    rs["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"]["serveDeploymentStatuses"][
        "LLMServer:deepseek"]["message"] = message
    c = classify(rs, [head_pod(), worker(1), worker(2, ready=False)])
    assert c.phase is Phase.GPU_NODES and c.look.state is State.PROGRESSING
    assert c.suspect and "cannot be placed" in c.suspect
    c = classify(rs, [head_pod(), worker(1), worker(2, ready=False, waiting=("ContainerCreating", ""))])
    assert c.suspect is None and c.phase is Phase.IMAGE_PULL


def test_the_slow_initialize_message_stays_in_weight_download():
    message = "Deployment 'LLMServer:deepseek' has 1 replicas that have taken more than 30s to initialize."
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),))))
    rs["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"]["serveDeploymentStatuses"][
        "LLMServer:deepseek"]["message"] = message
    assert classify(rs, [head_pod(), worker(1)]).phase is Phase.WEIGHT_DOWNLOAD


def test_a_rayservice_the_operator_never_reconciled_is_a_suspect():
    rs = ray_service()
    del rs["status"]
    c = classify(rs)
    assert c.look.state is State.PROGRESSING and "operator is not reconciling" in c.suspect
    assert c.suspect_min_grace_s == 300


def test_disks_that_stopped_growing_mean_the_engine_is_starting():
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),))))
    pods = [head_pod(), worker(1)]
    growing = classify_ray_service(Observation(rs, pods, disk=DiskTrend(412.0, True)))
    assert growing.phase is Phase.WEIGHT_DOWNLOAD and "worker disk ~400 GB used, growing" in growing.look.detail
    flat = classify_ray_service(Observation(rs, pods, disk=DiskTrend(700.0, False)))
    assert flat.phase is Phase.ENGINE_START and "worker disk ~700 GB used" in flat.look.detail


def test_an_eviction_of_a_pod_already_replaced_is_still_a_suspect():
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),))))
    events = [{"reason": "Evicted", "count": 2, "message": "The node was low on resource: ephemeral-storage.",
               "involvedObject": {"kind": "Pod", "name": f"{CLUSTER}-gpu-group-worker-gone1"}},
              {"reason": "Evicted", "involvedObject": {"kind": "Pod", "name": "someone-elses-pod"}}]
    c = classify(rs, [head_pod(), worker(1)], events)
    assert c.suspect.startswith("2 eviction(s)") and "ephemeral-storage" in c.suspect


def _asking_for_gpus(p, gpus="8", accelerator="nvidia-h100-80gb"):
    p["spec"] = {"nodeSelector": {"cloud.google.com/gke-accelerator": accelerator},
                 "containers": [{"name": "ray-worker", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    return p


@pytest.mark.parametrize("room, accelerator, suspect", [
    (8, "nvidia-h100-80gb", False),   # refused while the driver installed; the GPUs are free now
    (0, "nvidia-h100-80gb", True),    # another workload holds every GPU of the node
    (4, "nvidia-h100-80gb", True),    # not enough left for the pod's 8
    (8, "nvidia-l4", True),           # the free GPUs are on a node the pod does not select
])
def test_a_refusal_older_than_the_free_gpus_of_a_matching_node_is_no_sign_of_missing_capacity(room, accelerator,
                                                                                             suspect):
    pods = [head_pod()] + [_asking_for_gpus(p, accelerator=accelerator) for p in unschedulable_workers()[1:]]
    obs = Observation(ray_service(pending=cluster_status()), pods, [], [gpu_node()], gpu_room={"gke-gpu-1": room})
    c = classify_ray_service(obs)
    assert c.phase is Phase.GPU_NODES and (c.suspect is not None) is suspect, c.suspect

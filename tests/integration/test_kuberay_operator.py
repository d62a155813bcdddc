"""ensure_kuberay_operator against the sandbox's Kubernetes API: the real upstream CRDs, over SSA."""

from __future__ import annotations

import shutil

import pytest

from blocks.errors import RolloutFailed
from sandbox.kube.controllers.nodes import add_node_pool_nodes
from sandbox.kube.controllers.scheduler import matches_node_affinity
from tasks.gateways.kube import CRD, DEPLOYMENT, NODE, POD, resource_of
from tasks.kuberay_operator import DEFAULT_VENDOR_ROOT, ensure_kuberay_operator, render_operator_manifests
from tests.integration.kuberay_sandbox import GPU_POOL, kube_sandbox, stack_spec, wait_for


@pytest.fixture(scope="module")
def box():
    yield from kube_sandbox()


def resource_versions(kube, objects):
    return {f"{o['kind']}/{o['metadata']['name']}": kube.get(resource_of(o), o["metadata"]["name"],
                                                            o["metadata"].get("namespace"))["metadata"]
            ["resourceVersion"] for o in objects}


def test_a_fresh_cluster_gets_every_crd_established_and_the_operator_available(box):
    spec = stack_spec()
    result = ensure_kuberay_operator.fn(box.kube, spec, clock=box.clock)
    assert len(result.applied) == 11 and result.unchanged == []
    for name in ("rayclusters.ray.io", "rayservices.ray.io", "rayjobs.ray.io", "raycronjobs.ray.io"):
        crd = box.kube.get(CRD, name)
        assert {"type": "Established", "status": "True"}.items() <= \
            next(c for c in crd["status"]["conditions"] if c["type"] == "Established").items()
        # the real schema went in, all of it (the rayjobs CRD is 1.39 MB of YAML)
        assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert any(m["manager"] == "gke-llm-flows" and m["operation"] == "Apply"
                   for m in crd["metadata"]["managedFields"])
    deployment = box.kube.get(DEPLOYMENT, "kuberay-operator", "default")
    assert any(c["type"] == "Available" and c["status"] == "True" for c in deployment["status"]["conditions"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/kuberay/operator:v1.7.0"


def test_the_operator_pod_never_lands_on_a_gpu_node_even_an_untainted_one(box):
    untainted = {**GPU_POOL, "name": "untainted-gpu-pool",
                 "config": {k: v for k, v in GPU_POOL["config"].items() if k != "taints"}}
    add_node_pool_nodes(box.ctx, untainted, ["gke-kuberay-gpu-cluster-untainted-gpu-pool-0000"])
    gpu_node = box.kube.get(NODE, "gke-kuberay-gpu-cluster-untainted-gpu-pool-0000")
    selector = "app.kubernetes.io/component=kuberay-operator"
    old = box.kube.list(POD, "default", label_selector=selector).items[0]
    assert matches_node_affinity(old, box.kube.get(NODE, old["spec"]["nodeName"]))
    assert not matches_node_affinity(old, gpu_node)       # the sandbox scheduler's own filter
    box.kube.delete(POD, old["metadata"]["name"], "default")
    new = wait_for(lambda: [p for p in box.kube.list(POD, "default", label_selector=selector).items
                            if p["metadata"]["uid"] != old["metadata"]["uid"] and p["spec"].get("nodeName")],
                   what="the replacement operator pod to be scheduled")
    assert new[0]["spec"]["nodeName"] == "gke-kuberay-gpu-cluster-default-pool-0000"


def test_a_second_run_makes_no_write_at_all(box):
    spec = stack_spec()
    objects = render_operator_manifests("1.7.0", "default", stack=spec.name)
    before = resource_versions(box.kube, objects)
    box.spy.calls.clear()
    result = ensure_kuberay_operator.fn(box.kube, spec, clock=box.clock)
    assert result.applied == [] and len(result.unchanged) == 11
    assert box.spy.writes() == []
    assert resource_versions(box.kube, objects) == before


def test_a_new_pinned_version_upgrades_the_same_objects_in_place(box, tmp_path):
    shutil.copytree(DEFAULT_VENDOR_ROOT / "v1.7.0", tmp_path / "v1.7.1")
    overlay = tmp_path / "v1.7.1/ray-operator/config/default/kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("newTag: v1.7.0", "newTag: v1.7.1"))
    uid = box.kube.get(DEPLOYMENT, "kuberay-operator", "default")["metadata"]["uid"]
    spec = stack_spec(operator={"version": "1.7.1"})
    result = ensure_kuberay_operator.fn(box.kube, spec, clock=box.clock, vendor_root=tmp_path)
    assert result.applied == ["Deployment default/kuberay-operator"]
    live = box.kube.get(DEPLOYMENT, "kuberay-operator", "default")
    assert live["metadata"]["uid"] == uid
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/kuberay/operator:v1.7.1"
    assert live["status"]["observedGeneration"] == live["metadata"]["generation"]
    assert any(c["type"] == "Available" and c["status"] == "True" for c in live["status"]["conditions"])


def test_an_operator_that_cannot_start_fails_fast_naming_its_pod(box):
    box.inject({"kind": "operator_crashloop"})
    selector = "app.kubernetes.io/component=kuberay-operator"
    try:
        for pod in box.kube.list(POD, "default", label_selector=selector).items:
            box.kube.delete(POD, pod["metadata"]["name"], "default")
        # a RolloutFailed (not a WaitTimedOut at the 6-hour test deadline) is the fast failure
        with pytest.raises(RolloutFailed, match=r"operator cannot start: pod default/kuberay-operator-\S+ container "
                                                r"'kuberay-operator' is CrashLoopBackOff"):
            ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    finally:
        box.ctx.faults.clear("operator_crashloop")

"""KubeClusters as the GKE simulator drives it (sandbox.hooks.ClusterHooks): an API server per cluster,
Nodes per node pool, inventory, teardown; and garbage collection by ownerReferences."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request

import kubernetes
import pytest

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.clusters import KubeClusters
from sandbox.profile import load_profile
from tests.sandbox_kube.conftest import client_for, pod_manifest

POOL = {"name": "gpu-pool", "config": {"machineType": "a3-highgpu-8g", "accelerators": [
    {"acceleratorCount": "8", "acceleratorType": "nvidia-h100-80gb",
     "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}]}, "locations": ["us-east5-a"]}


def wait_for(predicate, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.02)
    return result


@pytest.fixture
def clusters():
    hooks = KubeClusters(ScaledClock(600), load_profile(), Faults())
    yield hooks
    hooks.stop()


def test_hooks_serve_a_cluster_register_nodes_and_tear_down(clusters):
    ref = ClusterRef("p", "us-east5", "llm")
    endpoint = clusters.cluster_provisioning(ref)
    assert endpoint.endpoint.startswith("127.0.0.1:") and "BEGIN CERTIFICATE" in endpoint.ca_certificate_pem
    assert clusters.cluster_provisioning(ref) == endpoint                         # idempotent
    kube = clusters.get(ref)
    core = kubernetes.client.CoreV1Api(client_for(kube))
    clusters.node_pool_running(ref, POOL, ["gke-llm-gpu-pool-1", "gke-llm-gpu-pool-2"])
    nodes = core.list_node(label_selector="cloud.google.com/gke-nodepool=gpu-pool").items
    assert sorted(n.metadata.name for n in nodes) == ["gke-llm-gpu-pool-1", "gke-llm-gpu-pool-2"]
    assert {n["name"] for n in clusters.inventory(ref)["nodes"]} == {"gke-llm-gpu-pool-1", "gke-llm-gpu-pool-2"}
    clusters.node_pool_deleted(ref, "gpu-pool")
    wait_for(lambda: not core.list_node(label_selector="cloud.google.com/gke-nodepool=gpu-pool").items)
    clusters.cluster_deleted(ref)
    assert clusters.get(ref) is None and clusters.inventory(ref) == {}
    request = urllib.request.Request(f"https://{endpoint.endpoint}/version", headers={"Authorization": "Bearer t"})
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(request, context=ssl.create_default_context(cadata=endpoint.ca_certificate_pem),
                               timeout=2)


def owned(name: str, owner) -> dict:
    body = {"metadata": {"name": name, "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
        "controller": True, "blockOwnerDeletion": True}]}}
    return body


def test_background_deletion_collects_dependents(core, namespace):
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, owned("child", owner))
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: not core.list_namespaced_config_map(namespace).items)


def test_orphan_deletion_keeps_dependents_without_the_reference(core, namespace):
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, owned("child", owner))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    child = core.read_namespaced_config_map("child", namespace)
    assert child.metadata.owner_references in (None, [])


def test_foreground_deletion_keeps_the_owner_until_dependents_are_gone(core, namespace):
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, {**owned("child", owner), "metadata": {
        **owned("child", owner)["metadata"], "finalizers": ["example.com/slow"]}})
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    held = core.read_namespaced_config_map("owner", namespace)
    assert held.metadata.deletion_timestamp and "foregroundDeletion" in held.metadata.finalizers
    wait_for(lambda: core.read_namespaced_config_map("child", namespace).metadata.deletion_timestamp)
    core.patch_namespaced_config_map("child", namespace, {"metadata": {"finalizers": None}})
    wait_for(lambda: not core.list_namespaced_config_map(namespace).items)


def test_running_pod_deletion_is_graceful(core, kube, namespace):
    core.create_namespaced_pod(namespace, pod_manifest("worker", terminationGracePeriodSeconds=30,
                                                       nodeName="gke-node"))
    core.patch_namespaced_pod_status("worker", namespace, {"status": {"phase": "Running"}})
    answer = core.delete_namespaced_pod("worker", namespace)
    assert answer.metadata.deletion_timestamp and answer.metadata.deletion_grace_period_seconds == 30
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, timeout_s=30 / kube.ctx.clock.time_scale + 3)


def test_deleting_a_crd_deletes_its_custom_resources(api, custom, kuberay_crds, namespace, sample_rayservice):
    ext = kubernetes.client.ApiextensionsV1Api(api)
    crd = next(c for c in kuberay_crds if c["metadata"]["name"] == "raycronjobs.ray.io")
    ext.patch_custom_resource_definition(crd["metadata"]["name"], crd, field_manager="t", force=True,
                                         _content_type="application/apply-patch+yaml")
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "raycronjobs", {
        "apiVersion": "ray.io/v1", "kind": "RayCronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"entrypoint": "python x.py"}}})
    ext.delete_custom_resource_definition("raycronjobs.ray.io")
    wait_for(lambda: not any(c.metadata.name == "raycronjobs.ray.io"
                             for c in ext.list_custom_resource_definition().items))
    ext.patch_custom_resource_definition(crd["metadata"]["name"], crd, field_manager="t", force=True,
                                         _content_type="application/apply-patch+yaml")
    assert custom.list_namespaced_custom_object("ray.io", "v1", namespace, "raycronjobs")["items"] == []

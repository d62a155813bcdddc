"""DaemonSets through the real API server with the official client: one pod per eligible node (taints,
nodeSelector), pinned by `matchFields metadata.name` and bound by the default scheduler, the daemon
tolerations and ownerReference, the status counts, a template change replacing every pod, node
arrival and loss, cascading deletion, and the `kubectl get ds` table."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import kubernetes
import pytest

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.cluster import KubeCluster, default_controllers
from sandbox.kube.controllers.nodes import add_node_pool_nodes, remove_node
from sandbox.profile import load_profile
from tests.integration.kuberay_sandbox import wait_for
from tests.sandbox_kube.conftest import client_for, raw_request

TIME_SCALE = 300.0
H100 = "nvidia-h100-80gb"
CPU_NODE = "gke-ds-default-pool-0000"
H100_NODES = ["gke-ds-gpu-pool-0000", "gke-ds-gpu-pool-0001"]
L4_NODE = "gke-ds-l4-pool-0000"
DAEMON_TOLERATION_KEYS = {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                          ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                          ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                          ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                          ("node.kubernetes.io/unschedulable", "NoSchedule")}


@pytest.fixture(scope="module")
def cluster():
    """A cluster with controllers: a CPU node, two H100 nodes and an L4 node (both GPU kinds tainted)."""
    kube = KubeCluster(ClusterRef("proj", "us-east5-a", "ds-tests"), clock=ScaledClock(TIME_SCALE),
                       profile=load_profile("realistic"), faults=Faults(), controllers=default_controllers())
    kube.start()
    add_node_pool_nodes(kube.ctx, {"name": "default-pool", "config": {"machineType": "e2-standard-16"}}, [CPU_NODE])
    add_node_pool_nodes(kube.ctx, {"name": "gpu-pool", "config": {"machineType": "a3-highgpu-8g", "accelerators": [
        {"acceleratorType": H100, "acceleratorCount": "8"}]}}, H100_NODES)
    add_node_pool_nodes(kube.ctx, {"name": "l4-pool", "config": {"machineType": "g2-standard-8"}}, [L4_NODE])
    yield kube
    kube.stop()
    kube.ctx.clock.stop()


@pytest.fixture(scope="module")
def api(cluster):
    client = client_for(cluster)
    yield client
    client.close()


@pytest.fixture
def namespace(api) -> str:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def daemonset(name: str = "prefetch", *, node_selector: dict[str, str] | None = None,
              gpu_toleration: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "weights-prefetch", "app.kubernetes.io/instance": name}
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 5,
                            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "inf"],
                                            "env": [{"name": "ROUND", "value": "1"}],
                                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if gpu_toleration:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "labels": {"owner": "tests"}},
            "spec": {"selector": {"matchLabels": labels},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def pods_of(api, namespace: str, name: str = "prefetch") -> list[Any]:
    core = kubernetes.client.CoreV1Api(api)
    return core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={name}").items


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def settled(api, namespace: str, want: int, name: str = "prefetch") -> Any:
    """The DaemonSet once it counts `want` ready, up-to-date pods and has no other pods."""
    apps = kubernetes.client.AppsV1Api(api)

    def check():
        ds = apps.read_namespaced_daemon_set(name, namespace)
        status, generation = ds.status, ds.metadata.generation
        pods = pods_of(api, namespace, name)
        fine = status is not None and (status.desired_number_scheduled == want and status.number_ready == want
                and (status.updated_number_scheduled or 0) == want and status.observed_generation == generation
                and len(pods) == want and all(ready(p) and not p.metadata.deletion_timestamp for p in pods))
        return (ds, pods) if fine else None
    return wait_for(check, what=f"{name} settled with {want} pods")


def test_pods_land_on_the_matching_gpu_nodes_only_pinned_and_owned_as_the_real_controller_does(api, namespace):
    apps = kubernetes.client.AppsV1Api(api)
    created = apps.create_namespaced_daemon_set(namespace, daemonset(node_selector={
        "cloud.google.com/gke-accelerator": H100}))
    ds, pods = settled(api, namespace, 2)
    assert sorted(p.spec.node_name for p in pods) == H100_NODES          # not the CPU node, not the L4 one
    status = ds.status
    assert (status.current_number_scheduled, status.number_available, status.number_misscheduled) == (2, 2, 0)
    assert status.number_unavailable is None and status.observed_generation == 1   # omitempty zero
    for pod in pods:
        assert pod.metadata.name.startswith("prefetch-") and len(pod.metadata.name) == len("prefetch-") + 5
        labels = pod.metadata.labels
        assert labels["app.kubernetes.io/instance"] == "prefetch" and labels["pod-template-generation"] == "1"
        assert labels["controller-revision-hash"]
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid, owner.controller, owner.block_owner_deletion) == (
            "DaemonSet", "prefetch", created.metadata.uid, True, True)
        terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
        assert [(f.key, f.operator, f.values) for t in terms for f in t.match_fields] == [
            ("metadata.name", "In", [pod.spec.node_name])]
        tolerations = {(t.key, t.effect) for t in pod.spec.tolerations if t.operator == "Exists"}
        assert DAEMON_TOLERATION_KEYS | {("nvidia.com/gpu", "NoSchedule")} <= tolerations
        assert pod.spec.termination_grace_period_seconds == 5 and not pod.spec.containers[0].resources.limits


def test_without_the_gpu_toleration_only_the_untainted_cpu_node_gets_a_pod(api, namespace):
    kubernetes.client.AppsV1Api(api).create_namespaced_daemon_set(namespace, daemonset(gpu_toleration=False))
    _, pods = settled(api, namespace, 1)
    assert [p.spec.node_name for p in pods] == [CPU_NODE]


def test_a_template_change_replaces_every_pod_with_the_new_generation(api, namespace):
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_daemon_set(namespace, daemonset(node_selector={"cloud.google.com/gke-accelerator": H100}))
    _, before = settled(api, namespace, 2)
    changed = daemonset(node_selector={"cloud.google.com/gke-accelerator": H100})
    changed["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "2"
    apps.patch_namespaced_daemon_set("prefetch", namespace, {"spec": {"template": changed["spec"]["template"]}})
    ds, after = settled(api, namespace, 2)
    assert ds.metadata.generation == 2 and ds.status.observed_generation == 2
    assert {p.metadata.labels["pod-template-generation"] for p in after} == {"2"}
    assert len({p.metadata.labels["controller-revision-hash"] for p in before + after}) == 2
    assert not {p.metadata.uid for p in before} & {p.metadata.uid for p in after}
    assert sorted(p.spec.node_name for p in after) == H100_NODES
    assert after[0].spec.containers[0].env[0].value == "2"


def test_a_new_matching_node_gets_a_pod_and_a_lost_node_takes_its_pod_with_it(cluster, api, namespace):
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_daemon_set(namespace, daemonset(name="extra", node_selector={"pool-role": "extra"}))
    extra_pool = {"name": "extra-pool", "config": {"machineType": "e2-standard-4", "labels": {"pool-role": "extra"}}}
    ds, _ = settled(api, namespace, 0, name="extra")
    assert ds.status.desired_number_scheduled == 0 and ds.status.current_number_scheduled == 0
    add_node_pool_nodes(cluster.ctx, extra_pool, ["gke-ds-extra-pool-0000", "gke-ds-extra-pool-0001"])
    _, pods = settled(api, namespace, 2, name="extra")
    assert sorted(p.spec.node_name for p in pods) == ["gke-ds-extra-pool-0000", "gke-ds-extra-pool-0001"]
    remove_node(cluster.ctx, "gke-ds-extra-pool-0001", reason="NodeLost")
    _, left = settled(api, namespace, 1, name="extra")
    assert [p.spec.node_name for p in left] == ["gke-ds-extra-pool-0000"]


def test_deleting_the_daemonset_deletes_its_pods(api, namespace):
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_daemon_set(namespace, daemonset(node_selector={"cloud.google.com/gke-accelerator": H100}))
    settled(api, namespace, 2)
    apps.delete_namespaced_daemon_set("prefetch", namespace)
    wait_for(lambda: not pods_of(api, namespace), what="the DaemonSet's pods gone")
    assert not apps.list_namespaced_daemon_set(namespace).items


def test_kubectl_get_ds_prints_the_daemonset_columns(cluster, api, namespace):
    ds = daemonset(node_selector={"cloud.google.com/gke-accelerator": H100})
    kubernetes.client.AppsV1Api(api).create_namespaced_daemon_set(namespace, copy.deepcopy(ds))
    settled(api, namespace, 2)
    status, _, body = raw_request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/daemonsets",
                                  headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = json.loads(body)
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"]
    assert table["rows"][0]["cells"][:7] == ["prefetch", 2, 2, 2, 2, 2, f"cloud.google.com/gke-accelerator={H100}"]

"""The whole Kubernetes side through the real API server: official client, server-side apply of the
upstream CRDs and the guide's sample, a watch until the guide's status, the service proxy to the
OpenAI endpoint, and `kubectl get rayservice -o yaml` (skipped without kubectl)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import kubernetes
import pytest
import yaml

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.cluster import KubeCluster
from sandbox.kube.controllers import add_node_pool_nodes
from sandbox.profile import load_profile
from tests.sandbox_kube.conftest import client_for, load_yaml_cached
from tests.sandbox_kuberay.conftest import CPU_POOL, GPU_POOL, UPSTREAM
from tests.sandbox_kuberay.test_happy_path import BOX_PUZZLE


@pytest.fixture(scope="module")
def cluster():
    kube = KubeCluster(ClusterRef("proj", "us-east5-a", "kuberay-gpu-cluster"), clock=ScaledClock(1500),
                       profile=load_profile("realistic"), faults=Faults())
    kube.start()
    yield kube
    kube.stop()
    kube.ctx.clock.stop()


def apply(api: kubernetes.client.ApiClient, obj: dict) -> None:
    """Server-side apply with the official client, as `kubectl apply --server-side` does."""
    group_version = obj["apiVersion"]
    kind = obj["kind"]
    if kind == "CustomResourceDefinition":
        kubernetes.client.ApiextensionsV1Api(api).patch_custom_resource_definition(
            obj["metadata"]["name"], obj, field_manager="tests", force=True,
            _content_type="application/apply-patch+yaml")
    elif kind == "Deployment":
        kubernetes.client.AppsV1Api(api).patch_namespaced_deployment(
            obj["metadata"]["name"], obj["metadata"]["namespace"], obj, field_manager="tests", force=True,
            _content_type="application/apply-patch+yaml")
    else:
        group, version = group_version.split("/")
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            group, version, obj["metadata"].get("namespace", "default"), "rayservices", obj["metadata"]["name"],
            obj, field_manager="tests", force=True, _content_type="application/apply-patch+yaml")


def test_the_sample_applied_server_side_serves_the_box_puzzle_through_the_service_proxy(cluster, pytestconfig):
    api = client_for(cluster)
    for path in sorted((UPSTREAM / "crd" / "bases").glob("ray.io_*.yaml")):
        apply(api, load_yaml_cached(path, pytestconfig.cache))
    operator = yaml.safe_load((UPSTREAM / "manager" / "manager.yaml").read_text())
    operator["metadata"]["namespace"] = "default"
    operator["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/kuberay/operator:v1.7.0"
    kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
        "default", {"metadata": {"name": "kuberay-operator"}})
    apply(api, operator)
    add_node_pool_nodes(cluster.ctx, CPU_POOL, ["gke-kuberay-gpu-cluster-default-pool-1a2b3c4d-x1y2"])
    add_node_pool_nodes(cluster.ctx, GPU_POOL, ["gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-a1b2",
                                                "gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-c3d4"])
    sample = yaml.safe_load((UPSTREAM / "samples" / "ray-service.deepseek.yaml").read_text())
    sample["metadata"]["namespace"] = "default"
    apply(api, sample)

    rs = _watch_until_serving(api, timeout_s=40)
    app = rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm_app"]
    assert app["status"] == "RUNNING"
    assert all(d["status"] == "HEALTHY" for d in app["serveDeploymentStatuses"].values())

    response = api.call_api(
        "POST", f"{api.configuration.host}/api/v1/namespaces/default/services/deepseek-r1-serve-svc:8000/proxy"
        "/v1/chat/completions",
        header_params={"Content-Type": "application/json", "Accept": "application/json",
                       "Authorization": "Bearer ya29.sandbox-token"},
        body={"model": "deepseek", "messages": [{"role": "user", "content": BOX_PUZZLE}]})
    response.read()
    reply = json.loads(response.data)
    assert response.status == 200 and reply["choices"][0]["finish_reason"] == "stop"
    assert "red, yellow, blue, green" in reply["choices"][0]["message"]["content"].split("</think>")[1]

    if shutil.which("kubectl"):
        _kubectl_shows_the_guides_status(cluster)


def _watch_until_serving(api: kubernetes.client.ApiClient, *, timeout_s: float) -> dict:
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        watch = kubernetes.watch.Watch()
        for event in watch.stream(custom.list_namespaced_custom_object, "ray.io", "v1", "default", "rayservices",
                                  timeout_seconds=5):
            rs = event["object"]
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (rs.get("status") or {}).get("conditions") or [])
            if ready and rs["status"].get("observedGeneration") == rs["metadata"]["generation"]:
                watch.stop()
                return rs
    raise AssertionError("RayService not serving in time")


def _kubectl_shows_the_guides_status(cluster: KubeCluster) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
              "clusters": [{"name": "sandbox", "cluster": {"server": f"https://{cluster.endpoint}",
                                                           "certificate-authority-data": _b64(cluster.ca_pem)}}],
              "users": [{"name": "sandbox", "user": {"token": "ya29.sandbox"}}],
              "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox"}}]}
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(["kubectl", "--kubeconfig", str(path), "get", "rayservice", "deepseek-r1", "-o", "yaml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = yaml.safe_load(out.stdout)["status"]
    assert status["activeServiceStatus"]["applicationStatuses"]["llm_app"]["status"] == "RUNNING"


def _b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()

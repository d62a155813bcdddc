"""The whole Kubernetes side through the real API server: official client, server-side apply of the
upstream CRDs and the guide's sample, a watch until the guide's status, the service proxy to the
OpenAI endpoint; and the guide's own steps with `kubectl` (skipped without kubectl)."""

from __future__ import annotations

import base64
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

SAMPLE = UPSTREAM / "samples" / "ray-service.deepseek.yaml"


@pytest.fixture(scope="module")
def cluster(pytestconfig):
    """A running cluster with the CRDs, the operator and room for two RayServices (one per test, each in
    its own namespace: the guide's nodes twice over); set up once because applying the ~1 MB CRDs
    through the API server takes seconds."""
    kube = KubeCluster(ClusterRef("proj", "us-east5-a", "kuberay-gpu-cluster"), clock=ScaledClock(3000),
                       profile=load_profile("realistic"), faults=Faults())
    kube.start()
    api = client_for(kube)
    for path in sorted((UPSTREAM / "crd" / "bases").glob("ray.io_*.yaml")):
        apply(api, load_yaml_cached(path, getattr(pytestconfig, "cache", None)))
    operator = yaml.safe_load((UPSTREAM / "manager" / "manager.yaml").read_text())
    operator["metadata"]["namespace"] = "default"
    operator["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/kuberay/operator:v1.7.0"
    kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
        "default", {"metadata": {"name": "kuberay-operator"}})
    apply(api, operator)
    add_node_pool_nodes(kube.ctx, CPU_POOL, [f"gke-kuberay-gpu-cluster-default-pool-1a2b3c4d-{n}"
                                             for n in ("x1y2", "z3w4")])
    add_node_pool_nodes(kube.ctx, GPU_POOL, [f"gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-{n}"
                                             for n in ("a1b2", "c3d4", "e5f6", "g7h8")])
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": "guide"}})
    yield kube
    kube.stop()
    kube.ctx.clock.stop()


def apply(api: kubernetes.client.ApiClient, obj: dict) -> None:
    """Server-side apply with the official client, as `kubectl apply --server-side` does."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    options = {"field_manager": "tests", "force": True, "_content_type": "application/apply-patch+yaml"}
    if kind == "CustomResourceDefinition":
        kubernetes.client.ApiextensionsV1Api(api).patch_custom_resource_definition(name, obj, **options)
    elif kind == "Deployment":
        kubernetes.client.AppsV1Api(api).patch_namespaced_deployment(name, obj["metadata"]["namespace"], obj,
                                                                     **options)
    else:
        group, version = obj["apiVersion"].split("/")
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            group, version, obj["metadata"].get("namespace", "default"), "rayservices", name, obj, **options)


def test_the_sample_applied_server_side_serves_the_box_puzzle_through_the_service_proxy(cluster):
    api = client_for(cluster)
    sample = yaml.safe_load(SAMPLE.read_text())
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


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_guides_kubectl_steps_reach_the_guides_status(cluster, tmp_path):
    # In namespace `guide` (the kubeconfig's), beside the other test's RayService in `default`.
    kubectl = _kubectl(cluster, tmp_path)
    applied = kubectl("apply", "--server-side", "-f", str(SAMPLE))
    assert "rayservice.ray.io/deepseek-r1 serverside-applied" in applied
    kubectl("wait", "--for=condition=Ready", "rayservice/deepseek-r1", "--timeout=60s")
    status = yaml.safe_load(kubectl("get", "rayservice", "deepseek-r1", "-o", "yaml"))["status"]
    app = status["activeServiceStatus"]["applicationStatuses"]["llm_app"]
    assert app["status"] == "RUNNING"
    assert {d["status"] for d in app["serveDeploymentStatuses"].values()} == {"HEALTHY"}
    pods = kubectl("get", "pods", "-l", "ray.io/is-ray-node=yes", "--no-headers")
    assert len(pods.splitlines()) == 3 and all(" Running " in line for line in pods.splitlines())
    services = kubectl("get", "services", "--no-headers", "-o", "custom-columns=NAME:.metadata.name")
    assert {"deepseek-r1-head-svc", "deepseek-r1-serve-svc"} <= set(services.split())


def _kubectl(cluster: KubeCluster, folder: Path):
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
              "clusters": [{"name": "sandbox", "cluster": {
                  "server": f"https://{cluster.endpoint}",
                  "certificate-authority-data": base64.b64encode(cluster.ca_pem.encode()).decode()}}],
              "users": [{"name": "sandbox", "user": {"token": "ya29.sandbox"}}],
              "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox",
                                                          "namespace": "guide"}}]}
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))

    def run(*args: str) -> str:
        out = subprocess.run(["kubectl", "--kubeconfig", str(path), *args], capture_output=True, text=True,
                             timeout=90)
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
        return out.stdout
    return run


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

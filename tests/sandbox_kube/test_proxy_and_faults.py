"""The service proxy subresource routes to simulated in-cluster servers; injected API faults surface
as the status codes a real control plane returns under load."""

from __future__ import annotations

import ast
import json

import kubernetes
import pytest

from sandbox.kube.context import HttpResponse
from tests.sandbox_kube.conftest import pod_manifest, raw_request


def serve_backend(core, kube, namespace: str, *, ready: bool = True) -> list:
    calls = []

    def handler(request):
        calls.append(request)
        return HttpResponse(200, json.dumps({"path": request.path, "query": request.query,
                                             "body": request.body.decode()}).encode())

    core.create_namespaced_service(namespace, {"metadata": {"name": "llm-serve-svc"}, "spec": {
        "selector": {"ray.io/serve": "true"}, "ports": [{"name": "serve", "port": 8000, "targetPort": "serve"}]}})
    pod = pod_manifest("llm-head", {"ray.io/serve": "true"})
    pod["spec"]["containers"][0]["ports"] = [{"name": "serve", "containerPort": 8000}]
    core.create_namespaced_pod(namespace, pod)
    core.patch_namespaced_pod_status("llm-head", namespace, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})
    kube.ctx.pod_ports.listen(namespace, "llm-head", 8000, handler)
    return calls


def test_proxy_forwards_method_path_query_and_body_to_the_ready_pod(core, kube, namespace):
    calls = serve_backend(core, kube, namespace)
    answer = core.connect_get_namespaced_service_proxy_with_path("llm-serve-svc:8000", namespace, "v1/models")
    # The official client decodes the JSON and hands back str() of the dict: a quirk of its generator.
    assert ast.literal_eval(answer) == {"path": "/v1/models", "query": "", "body": ""}
    status, _, body = raw_request(kube, "POST", f"/api/v1/namespaces/{namespace}/services/llm-serve-svc:serve/proxy"
                                  "/v1/chat/completions?stream=false", b'{"model": "deepseek"}',
                                  {"Content-Type": "application/json"})
    assert status == 200
    assert json.loads(body) == {"path": "/v1/chat/completions", "query": "stream=false",
                                "body": '{"model": "deepseek"}'}
    assert calls[-1].method == "POST" and "authorization" not in {k.lower() for k in calls[-1].headers}


def test_proxy_without_ready_endpoints_gets_503(core, kube, namespace):
    serve_backend(core, kube, namespace, ready=False)
    status, _, body = raw_request(kube, "GET", f"/api/v1/namespaces/{namespace}/services/llm-serve-svc:8000/proxy/")
    assert status == 503
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": 'no endpoints available for service "llm-serve-svc"',
                                "reason": "ServiceUnavailable", "code": 503}


def test_proxy_to_a_missing_service_gets_404(kube, namespace):
    status, _, body = raw_request(kube, "GET", f"/api/v1/namespaces/{namespace}/services/nope:8000/proxy/v1/models")
    assert status == 404 and json.loads(body)["message"] == 'services "nope" not found'


def test_injected_429_carries_retry_after_like_api_priority_and_fairness(kube, namespace):
    kube.ctx.faults.add({"kind": "kube_transient", "times": 1, "status": 429,
                         "path": f"/api/v1/namespaces/{namespace}/*"})
    status, headers, body = raw_request(kube, "GET", f"/api/v1/namespaces/{namespace}/pods")
    assert status == 429 and headers["retry-after"] == "1"
    assert json.loads(body)["reason"] == "TooManyRequests"
    assert raw_request(kube, "GET", f"/api/v1/namespaces/{namespace}/pods")[0] == 200


def test_injected_500_reaches_the_official_client_as_api_exception(core, kube, namespace):
    # (urllib3 itself retries 429/503 that carry Retry-After, as it would against GKE; 500 has none.)
    kube.ctx.faults.add({"kind": "kube_transient", "rate": 1.0, "times": 1, "status": 500,
                         "path": f"/api/v1/namespaces/{namespace}/configmaps"})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.list_namespaced_config_map(namespace)
    assert caught.value.status == 500
    assert json.loads(caught.value.body)["reason"] == "InternalError"
    assert core.list_namespaced_config_map(namespace).items == []


def test_pod_logs_serve_what_simulated_processes_wrote(core, kube, namespace):
    pod = pod_manifest("head", {"ray.io/node-type": "head"})
    pod["spec"]["containers"].append({"name": "autoscaler", "image": "ray:2.52"})
    core.create_namespaced_pod(namespace, pod)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.read_namespaced_pod_log("head", namespace)
    assert json.loads(caught.value.body)["message"] == ("a container name must be specified for pod head, choose "
                                                        "one of: [main autoscaler]")
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.read_namespaced_pod_log("head", namespace, container="main")
    assert json.loads(caught.value.body)["message"] == ('container "main" in pod "head" is waiting to start: '
                                                        "ContainerCreating")
    for line in ("Starting workers", "Reconciling RayService"):
        kube.ctx.pod_logs.write(namespace, "head", "main", line)
    assert core.read_namespaced_pod_log("head", namespace, container="main") == \
        "Starting workers\nReconciling RayService\n"
    assert core.read_namespaced_pod_log("head", namespace, container="main", tail_lines=1) == "Reconciling RayService\n"
    kube.ctx.pod_logs.restart(namespace, "head", "main")
    assert core.read_namespaced_pod_log("head", namespace, container="main", previous=True).startswith("Starting")

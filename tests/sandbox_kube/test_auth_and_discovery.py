"""Bearer-token auth as GKE does it from the client side, TLS through the cluster's own CA, discovery."""

from __future__ import annotations

import json
import ssl
import urllib.request

import kubernetes
import pytest

from tests.sandbox_kube.conftest import client_for, raw_get


def test_request_without_token_gets_401_status(kube):
    core = kubernetes.client.CoreV1Api(client_for(kube, token=None))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.list_namespace()
    assert caught.value.status == 401
    body = json.loads(caught.value.body)
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_any_bearer_token_is_accepted_and_never_logged(kube, caplog):
    core = kubernetes.client.CoreV1Api(client_for(kube, token="ya29.very-secret-value"))
    with caplog.at_level("DEBUG", logger="sandbox"):
        names = [n.metadata.name for n in core.list_namespace().items]
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names)
    assert "very-secret-value" not in caplog.text


def test_tls_is_verified_against_the_generated_ca_only(kube):
    request = urllib.request.Request(f"https://{kube.endpoint}/version", headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cadata=kube.ca_pem)) as answer:
        assert json.load(answer)["major"] == "1"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(request, context=ssl.create_default_context())


def test_discovery_lists_core_and_group_resources(api):
    resources = kubernetes.client.CoreV1Api(api).get_api_resources()
    pods = next(r for r in resources.resources if r.name == "pods")
    assert pods.namespaced and pods.kind == "Pod" and "watch" in pods.verbs and pods.short_names == ["po"]
    assert any(r.name == "services/proxy" for r in resources.resources)
    groups = {g.name: g.preferred_version.group_version for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
    assert groups["apps"] == "apps/v1"
    assert groups["apiextensions.k8s.io"] == "apiextensions.k8s.io/v1"
    assert kubernetes.client.VersionApi(api).get_code().git_version.startswith("v1.32")


def test_custom_resources_appear_in_discovery_once_their_crd_is_established(kube, api, installed_crds):
    groups = {g.name: g for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
    assert groups["ray.io"].preferred_version.version == "v1"
    answer = raw_get(kube, "/apis/ray.io/v1")
    by_name = {r["name"]: r for r in answer["resources"]}
    assert by_name["rayservices"]["kind"] == "RayService" and by_name["rayservices"]["namespaced"]
    assert "shortNames" not in by_name["rayservices"]           # the v1.7.0 CRD declares none
    assert by_name["rayservices/status"]["verbs"] == ["get", "patch", "update"]


def test_unknown_paths_and_types_get_404_status(kube):
    with pytest.raises(urllib.error.HTTPError) as caught:
        raw_get(kube, "/apis/nothing.example.com/v1/widgets")
    assert caught.value.code == 404
    assert json.load(caught.value)["message"] == "the server could not find the requested resource"

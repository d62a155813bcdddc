"""PATCH in all four flavours, server-side apply with field managers and conflicts, the status subresource."""

from __future__ import annotations

import json

import kubernetes
import pytest

APPLY = "application/apply-patch+yaml"


def deployment(replicas: int = 1, image: str = "quay.io/kuberay/operator:v1.7.0") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "kuberay-operator", "labels": {"app": "kuberay"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "kuberay"}},
                     "template": {"metadata": {"labels": {"app": "kuberay"}},
                                  "spec": {"containers": [{"name": "kuberay-operator", "image": image}]}}}}


@pytest.fixture
def apps(api):
    return kubernetes.client.AppsV1Api(api)


def test_merge_json_and_strategic_patches(core, namespace):
    core.create_namespaced_pod(namespace, {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {
        "containers": [{"name": "one", "image": "x:1"}, {"name": "two", "image": "y:1"}]}})
    merged = core.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"a": None, "c": "3"}}},
                                       _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"b": "2", "c": "3"}
    patched = core.patch_namespaced_pod("p", namespace, [{"op": "replace", "path": "/spec/containers/1/image",
                                                          "value": "y:2"}])
    assert [c.image for c in patched.spec.containers] == ["x:1", "y:2"]
    strategic = core.patch_namespaced_pod("p", namespace, {"spec": {"containers": [{"name": "one", "image": "x:9"}]}})
    assert [(c.name, c.image) for c in strategic.spec.containers] == [("one", "x:9"), ("two", "y:2")]


def test_json_patch_test_failure_gets_422(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.patch_namespaced_config_map("c", namespace, [{"op": "test", "path": "/data/k", "value": "other"}])
    assert caught.value.status == 422


def test_server_side_apply_creates_then_updates_and_records_the_manager(apps, namespace):
    created = apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(), field_manager="flows",
                                               _content_type=APPLY)
    assert created.spec.replicas == 1 and created.metadata.generation == 1
    entry = created.metadata.managed_fields[0]
    assert (entry.manager, entry.operation, entry.api_version) == ("flows", "Apply", "apps/v1")
    assert "f:replicas" in entry.fields_v1["f:spec"]
    again = apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(), field_manager="flows",
                                             _content_type=APPLY)
    assert again.metadata.resource_version == created.metadata.resource_version   # a no-op is not written
    changed = apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(image="x:2"),
                                               field_manager="flows", _content_type=APPLY)
    assert changed.metadata.generation == 2
    assert changed.spec.template.spec.containers[0].image == "x:2"


def test_apply_conflicts_with_another_manager_unless_forced(apps, namespace):
    apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(), field_manager="flows",
                                     _content_type=APPLY)
    apps.patch_namespaced_deployment("kuberay-operator", namespace, {"spec": {"replicas": 3}},
                                     field_manager="kubectl-edit", _content_type="application/merge-patch+json")
    with pytest.raises(kubernetes.client.ApiException) as caught:
        apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(replicas=1), field_manager="flows",
                                         _content_type=APPLY)
    assert caught.value.status == 409
    body = json.loads(caught.value.body)
    assert body["reason"] == "Conflict"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message":
                                          'conflict with "kubectl-edit" using apps/v1', "field": ".spec.replicas"}]
    forced = apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(replicas=1),
                                              field_manager="flows", force=True, _content_type=APPLY)
    assert forced.spec.replicas == 1
    # kubectl-edit owned nothing else, so its entry is gone, as on a real server.
    assert [e.manager for e in forced.metadata.managed_fields] == ["flows"]


def test_apply_removes_fields_the_manager_stopped_applying(core, namespace):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}},
            "data": {"x": "1", "y": "2"}}
    core.patch_namespaced_config_map("cm", namespace, body, field_manager="me", _content_type=APPLY)
    body["data"] = {"x": "1"}
    body["metadata"]["labels"] = {"a": "1"}
    live = core.patch_namespaced_config_map("cm", namespace, body, field_manager="me", _content_type=APPLY)
    assert live.data == {"x": "1"} and live.metadata.labels == {"a": "1"}


def test_status_subresource_writes_only_status(apps, namespace):
    apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(), field_manager="flows",
                                     _content_type=APPLY)
    after = apps.patch_namespaced_deployment_status("kuberay-operator", namespace, {
        "spec": {"replicas": 9}, "status": {"availableReplicas": 1}})
    assert after.status.available_replicas == 1 and after.spec.replicas == 1
    main = apps.patch_namespaced_deployment("kuberay-operator", namespace, {"status": {"availableReplicas": 0}})
    assert main.status.available_replicas == 1
    assert main.metadata.generation == 1


def test_unsupported_patch_type_gets_415(api, kube, namespace):
    from tests.sandbox_kube.conftest import raw_request

    status, _, body = raw_request(kube, "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/x", b"{}",
                                  {"Content-Type": "text/plain"})
    assert status == 415 and json.loads(body)["reason"] == "UnsupportedMediaType"


def test_immutable_fields_are_refused_on_update(apps, core, namespace):
    apps.patch_namespaced_deployment("kuberay-operator", namespace, deployment(), field_manager="flows",
                                     _content_type=APPLY)
    changed = deployment()
    changed["spec"]["selector"]["matchLabels"] = changed["spec"]["template"]["metadata"]["labels"] = {"app": "new"}
    with pytest.raises(kubernetes.client.ApiException) as caught:
        apps.patch_namespaced_deployment("kuberay-operator", namespace, changed, field_manager="flows",
                                         force=True, _content_type=APPLY)
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["details"]["causes"][0]["field"] == "spec.selector"
    assert "field is immutable" in json.loads(caught.value.body)["message"]
    core.create_namespaced_pod(namespace, {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "x:1"}]}})
    core.patch_namespaced_pod("p", namespace, {"spec": {"containers": [{"name": "c", "image": "x:2"}]}})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.patch_namespaced_pod("p", namespace, {"spec": {"restartPolicy": "Never"}})
    assert json.loads(caught.value.body)["message"].startswith(
        'Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`')

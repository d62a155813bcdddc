"""The real KubeRay v1.7.0 CRDs: server-side apply, Established, custom objects validated against the
real schema (422 naming the path), pruning, the status subresource, and the annotation limit that
breaks client-side apply."""

from __future__ import annotations

import copy
import json
import time

import kubernetes
import pytest

APPLY = "application/apply-patch+yaml"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def test_all_four_kuberay_crds_apply_server_side_and_become_established(api, kuberay_crds):
    ext = kubernetes.client.ApiextensionsV1Api(api)
    started = time.monotonic()
    for crd in kuberay_crds:
        applied = ext.patch_custom_resource_definition(crd["metadata"]["name"], crd, field_manager="kuberay-install",
                                                       force=True, _content_type=APPLY)
        conditions = {c.type: c.status for c in applied.status.conditions}
        assert conditions == {"NamesAccepted": "True", "Established": "True"}
        assert applied.status.accepted_names.kind == crd["spec"]["names"]["kind"]
    assert time.monotonic() - started < 10
    names = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"} <= names


def test_reapplying_an_unchanged_crd_keeps_its_generation(api, kuberay_crds, installed_crds):
    ext = kubernetes.client.ApiextensionsV1Api(api)
    crd = next(c for c in kuberay_crds if c["metadata"]["name"] == "rayservices.ray.io")
    before = ext.patch_custom_resource_definition("rayservices.ray.io", crd, field_manager="kuberay-tests",
                                                  force=True, _content_type=APPLY)
    after = ext.patch_custom_resource_definition("rayservices.ray.io", crd, field_manager="kuberay-tests",
                                                 force=True, _content_type=APPLY)
    assert after.metadata.generation == before.metadata.generation
    assert after.metadata.resource_version == before.metadata.resource_version


def test_client_side_apply_of_the_rayservice_crd_fails_on_annotation_size(api, kuberay_crds):
    # What `kubectl apply` (client-side) sends: the object plus itself, compact, as an annotation. Renamed
    # so the session's installed CRD does not answer 409 first.
    fresh = copy.deepcopy(next(c for c in kuberay_crds if c["metadata"]["name"] == "rayservices.ray.io"))
    fresh["metadata"]["name"] = "rayservices.sandbox.example.com"
    fresh["spec"]["group"] = "sandbox.example.com"
    fresh["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(fresh, separators=(",", ":"))
    ext = kubernetes.client.ApiextensionsV1Api(api)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        ext.create_custom_resource_definition(fresh)
    body = json.loads(caught.value.body)
    assert caught.value.status == 422
    assert body["message"] == ('CustomResourceDefinition.apiextensions.k8s.io "rayservices.sandbox.example.com" is '
                               "invalid: metadata.annotations: Too long: must have at most 262144 bytes")
    assert body["details"]["causes"] == [{"reason": "FieldValueTooLong", "field": "metadata.annotations",
                                          "message": "Too long: must have at most 262144 bytes"}]


def test_sample_rayservice_applies_and_reads_back(custom, installed_crds, namespace, sample_rayservice):
    created = custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1",
                                                    sample_rayservice, field_manager="flows", force=True,
                                                    _content_type=APPLY)
    # The server answers 201 Created for an apply that creates, and the official client only maps 200 for
    # patch, so it returns None here exactly as against a real cluster.
    assert created is None
    applied = custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1",
                                                    sample_rayservice, field_manager="flows", force=True,
                                                    _content_type=APPLY)
    assert applied["metadata"]["generation"] == 1 and applied["kind"] == "RayService"
    head = applied["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "rayproject/ray-llm:2.52.0-py311-cu128"
    assert head["ports"][0]["protocol"] == "TCP"              # defaulted from the CRD schema
    listed = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayservices")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["deepseek-r1"]


def test_invalid_rayservice_field_gets_422_naming_the_path(custom, installed_crds, namespace, sample_rayservice):
    bad = copy.deepcopy(sample_rayservice)
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", bad)
    body = json.loads(caught.value.body)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    path = "spec.rayClusterConfig.workerGroupSpecs[0].replicas"
    assert body["details"]["causes"] == [{"reason": "FieldValueTypeInvalid", "field": path, "message":
                                          f'Invalid value: "string": {path} in body must be of type integer: "string"'}]
    assert body["message"].startswith('RayService.ray.io "deepseek-r1" is invalid: ' + path)


def test_missing_required_field_and_bad_enum_are_rejected(custom, installed_crds, namespace, sample_rayservice):
    bad = copy.deepcopy(sample_rayservice)
    del bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    bad["spec"]["rayClusterConfig"]["upgradeStrategy"] = {"type": "Sideways"}
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", bad)
    fields = {c["field"]: c for c in json.loads(caught.value.body)["details"]["causes"]}
    assert fields["spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].name"]["reason"] == \
        "FieldValueRequired"
    assert fields["spec.rayClusterConfig.upgradeStrategy.type"] == {
        "reason": "FieldValueNotSupported", "field": "spec.rayClusterConfig.upgradeStrategy.type",
        "message": 'Unsupported value: "Sideways": supported values: "Recreate", "None"'}


def test_unknown_fields_are_pruned_with_a_warning_or_rejected_when_strict(kube, installed_crds, namespace,
                                                                          sample_rayservice, custom):
    from tests.sandbox_kube.conftest import raw_request

    body = copy.deepcopy(sample_rayservice)
    body["metadata"]["name"] = "pruned"
    body["spec"]["notAField"] = True
    status, headers, answer = raw_request(kube, "POST", f"/apis/ray.io/v1/namespaces/{namespace}/rayservices",
                                          json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert status == 201
    assert "notAField" not in json.loads(answer)["spec"]
    assert 'unknown field \\"spec.notAField\\"' in headers["warning"]
    body["metadata"]["name"] = "strict"
    status, _, answer = raw_request(kube, "POST", f"/apis/ray.io/v1/namespaces/{namespace}/rayservices"
                                    "?fieldValidation=Strict", json.dumps(body).encode(),
                                    {"Content-Type": "application/json"})
    assert status == 400
    assert json.loads(answer)["message"] == ('RayService in version "v1" cannot be handled as a RayService: strict '
                                             'decoding error: unknown field "spec.notAField"')


def test_custom_resource_status_subresource(custom, installed_crds, namespace, sample_rayservice):
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", sample_rayservice)
    custom.patch_namespaced_custom_object_status("ray.io", "v1", namespace, "rayservices", "deepseek-r1", {
        "status": {"serviceStatus": "Running", "numServeEndpoints": 2}})
    ignored = custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1",
                                                    {"status": {"serviceStatus": "Failed"}})
    assert ignored["status"]["serviceStatus"] == "Running"
    read = custom.get_namespaced_custom_object_status("ray.io", "v1", namespace, "rayservices", "deepseek-r1")
    assert read["status"]["numServeEndpoints"] == 2 and read["metadata"]["generation"] == 1


def test_serve_config_change_bumps_generation(custom, installed_crds, namespace, sample_rayservice):
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", sample_rayservice)
    changed = custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1", {
        "spec": {"serveConfigV2": "applications: []\n"}})
    assert changed["metadata"]["generation"] == 2


def test_custom_resource_put_without_resource_version_gets_422(custom, installed_crds, namespace,
                                                               sample_rayservice):
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", sample_rayservice)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.replace_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1",
                                                sample_rayservice)
    assert caught.value.status == 422
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in caught.value.body


def test_managed_by_is_immutable_per_the_crd_rule(custom, installed_crds, namespace, sample_rayservice):
    body = copy.deepcopy(sample_rayservice)
    body["metadata"]["name"] = "managed"
    body["spec"]["rayClusterConfig"]["managedBy"] = "ray.io/kuberay-operator"
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", body)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "managed", {
            "spec": {"rayClusterConfig": {"managedBy": "kueue.x-k8s.io/multikueue"}}})
    assert caught.value.status == 422 and "the managedBy field is immutable" in caught.value.body


def test_server_side_apply_with_an_undeclared_field_gets_400(custom, installed_crds, namespace, sample_rayservice):
    body = copy.deepcopy(sample_rayservice)
    body["spec"]["rayClusterConfig"]["headGroupSpec"]["bogus"] = 1
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.patch_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "deepseek-r1", body,
                                              field_manager="flows", _content_type=APPLY)
    assert caught.value.status == 400
    assert json.loads(caught.value.body)["message"] == (
        f"failed to create typed patch object ({namespace}/deepseek-r1; ray.io/v1, Kind=RayService): "
        ".spec.rayClusterConfig.headGroupSpec.bogus: field not declared in schema")


def test_deprecated_crd_versions_answer_with_their_deprecation_warning(kube, installed_crds, namespace):
    from tests.sandbox_kube.conftest import raw_request

    status, headers, _ = raw_request(kube, "GET", f"/apis/ray.io/v1alpha1/namespaces/{namespace}/rayservices")
    assert status == 200
    assert headers["warning"] == ('299 - "ray.io/v1alpha1 RayService is deprecated; use ray.io/v1 RayService. '
                                  'v1alpha1 receives no new fields and will be unavailable in KubeRay 1.9."')
    assert "warning" not in raw_request(kube, "GET", f"/apis/ray.io/v1/namespaces/{namespace}/rayservices")[1]

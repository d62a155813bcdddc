"""A warm cluster's KubeRay CRDs are checked by their metadata, not re-read or re-sent (1.35 MB)."""

from __future__ import annotations

import pytest

from tasks.gateways.kube import CRD, KubeApi
from tasks.kuberay_operator import (
    MANIFEST_HASH_KEY,
    crd_is_current,
    ensure_kuberay_operator,
    manifest_hash,
    render_operator_manifests,
)
from tests.integration.kuberay_sandbox import kube_sandbox, stack_spec

CRD_NAMES = ("rayclusters.ray.io", "rayservices.ray.io", "rayjobs.ray.io", "raycronjobs.ray.io")


@pytest.fixture(scope="module")
def box():
    yield from kube_sandbox()


def crd_reads(calls):
    """Requests that read or wrote one CRD whole (by name)."""
    return [(m, p) for m, p in calls if any(p.split("?")[0].endswith(f"/customresourcedefinitions/{n}")
                                            for n in CRD_NAMES)]


def test_the_applied_crds_carry_the_hash_of_what_was_applied(box):
    result = ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    assert len(result.applied) == 11
    rendered = {o["metadata"]["name"]: o for o in render_operator_manifests("1.7.0", "default", stack="deepseek-r1")}
    for name in CRD_NAMES:
        live = box.kube.get(CRD, name)
        assert live["metadata"]["annotations"][MANIFEST_HASH_KEY] == manifest_hash(rendered[name])
        assert manifest_hash(rendered[name]) == rendered[name]["metadata"]["annotations"][MANIFEST_HASH_KEY]


def test_a_warm_check_lists_crd_metadata_once_and_reads_no_crd_whole(box):
    ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    box.spy.calls.clear()
    result = ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    assert result.applied == [] and len(result.unchanged) == 11
    assert crd_reads(box.spy.calls) == []
    lists = [p for m, p in box.spy.calls if m == "GET" and "/customresourcedefinitions?" in p]
    assert len(lists) == 1 and "includeObject=Metadata" in lists[0]
    assert box.spy.writes() == []


def test_a_crd_someone_else_changed_is_read_and_set_back(box):
    ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    other = KubeApi(box.api_client, field_manager="kubectl-edit")
    other.apply({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": "rayjobs.ray.io", "annotations": {MANIFEST_HASH_KEY: "tampered"}}})
    box.spy.calls.clear()
    result = ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    assert result.applied == ["CustomResourceDefinition rayjobs.ray.io"]
    assert ("PATCH" in {m for m, _ in crd_reads(box.spy.calls)})
    live = box.kube.get(CRD, "rayjobs.ray.io")
    assert live["metadata"]["annotations"][MANIFEST_HASH_KEY] != "tampered"


def test_another_writer_that_left_our_fields_alone_costs_a_read_but_no_write(box):
    ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    other = KubeApi(box.api_client, field_manager="someone-else")
    other.apply({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": "rayservices.ray.io", "annotations": {"example.com/note": "hello"}}})
    box.spy.calls.clear()
    result = ensure_kuberay_operator.fn(box.kube, stack_spec(), clock=box.clock)
    assert result.applied == []
    assert ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayservices.ray.io") in \
        [(m, p.split("?")[0]) for m, p in crd_reads(box.spy.calls)]
    assert box.spy.writes() == []


def test_crd_is_current_needs_our_labels_the_hash_and_no_other_writer():
    meta = {"name": "x", "labels": {"managed-by": "gke-llm-flows", "gke-llm-flows-stack": "s"},
            "annotations": {MANIFEST_HASH_KEY: "abc"},
            "managedFields": [{"manager": "gke-llm-flows", "operation": "Apply"},
                              {"manager": "kube-apiserver", "operation": "Update", "subresource": "status"}]}
    assert crd_is_current(meta, "abc")
    assert not crd_is_current(meta, "abd")
    assert not crd_is_current(None, "abc")
    assert not crd_is_current({**meta, "labels": {}}, "abc")
    assert not crd_is_current({**meta, "deletionTimestamp": "2026-01-01T00:00:00Z"}, "abc")
    helm = {**meta, "managedFields": meta["managedFields"] + [{"manager": "helm", "operation": "Update"}]}
    assert not crd_is_current(helm, "abc")


def test_manifest_hash_ignores_only_its_own_annotation():
    obj = {"kind": "CustomResourceDefinition", "metadata": {"name": "x"}, "spec": {"a": 1}}
    stamped = {**obj, "metadata": {"name": "x", "annotations": {MANIFEST_HASH_KEY: "whatever"}}}
    assert manifest_hash(obj) == manifest_hash(stamped)
    assert manifest_hash(obj) != manifest_hash({**obj, "spec": {"a": 2}})
    noted = {**obj, "metadata": {"name": "x", "annotations": {"note": "y"}}}
    assert manifest_hash(obj) != manifest_hash(noted)

"""Rendering the vendored KubeRay install and planning RayService changes (pure functions)."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

import pytest

from blocks.errors import DriftError, NotOursError, PermanentError
from blocks.render_rayservice import ray_service_manifest
from blocks.spec import StackSpec
from tasks.kuberay_operator import DEFAULT_VENDOR_ROOT, is_subset, plan_operator, render_operator_manifests
from tasks.ray_service import Action, changed_paths, plan_ray_service

# The read-only reference copy beside the project (when present), which the vendored files came from.
UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "kuberay" / "v1.7.0"


def spec(**serving) -> StackSpec:
    return StackSpec.parse({"name": "deepseek-r1", "cluster": {"project": "my-project", "location": "us-east5-a"},
                            "serving": serving})


def kinds(objects):
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_the_vendored_files_are_unmodified_upstream_files():
    vendored = DEFAULT_VENDOR_ROOT / "v1.7.0"
    sums = dict(line.split("  ", 1)[::-1] for line in
                (DEFAULT_VENDOR_ROOT / "v1.7.0.SHA256SUMS").read_text().splitlines())
    files = sorted(str(p.relative_to(vendored)) for p in vendored.rglob("*") if p.is_file())
    assert files == sorted(sums) and len(files) == 17
    for rel in files:
        assert hashlib.sha256((vendored / rel).read_bytes()).hexdigest() == sums[rel], rel
        if UPSTREAM.is_dir():      # the reference copy the project was vendored from
            assert (vendored / rel).read_bytes() == (UPSTREAM / rel).read_bytes(), rel


def test_render_gives_what_the_default_overlay_renders_in_apply_order():
    objects = render_operator_manifests("1.7.0", "default", stack="deepseek-r1")
    assert kinds(objects) == [
        ("CustomResourceDefinition", "rayclusters.ray.io"), ("CustomResourceDefinition", "rayservices.ray.io"),
        ("CustomResourceDefinition", "rayjobs.ray.io"), ("CustomResourceDefinition", "raycronjobs.ray.io"),
        ("ServiceAccount", "kuberay-operator"), ("ClusterRole", "kuberay-operator"),
        ("Role", "kuberay-operator-leader-election"), ("ClusterRoleBinding", "kuberay-operator"),
        ("RoleBinding", "kuberay-operator-leader-election"), ("Service", "kuberay-operator"),
        ("Deployment", "kuberay-operator")]
    deployment = objects[-1]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "quay.io/kuberay/operator:v1.7.0"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay",
                                                             "app.kubernetes.io/component": "kuberay-operator"}


def test_render_moves_everything_namespaced_and_the_binding_subject_to_the_namespace():
    objects = render_operator_manifests("1.7.0", "ray-system", stack="s")
    assert objects[4] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "ray-system", "labels": {"managed-by": "gke-llm-flows", "gke-llm-flows-stack": "s"}}}
    for obj in objects:
        cluster_scoped = obj["kind"] in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace")
        assert ("namespace" in obj["metadata"]) is not cluster_scoped, obj["kind"]
        if not cluster_scoped:
            assert obj["metadata"]["namespace"] == "ray-system"
    for binding in (o for o in objects if o["kind"].endswith("RoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kuberay-operator",
                                        "namespace": "ray-system"}]


def test_the_operator_is_kept_off_gpu_nodes_and_tolerates_no_gpu_taint():
    deployment = render_operator_manifests("1.7.0", "default", stack="s")[-1]
    pod = deployment["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "cloud.google.com/gke-accelerator", "operator": "DoesNotExist"}]}]
    assert "tolerations" not in pod


def test_owner_labels_go_on_objects_but_never_on_immutable_selectors():
    for obj in render_operator_manifests("1.7.0", "default", stack="s"):
        assert obj["metadata"]["labels"]["managed-by"] == "gke-llm-flows"
        if obj["kind"] in ("Deployment", "Service"):
            selector = obj["spec"]["selector"].get("matchLabels", obj["spec"]["selector"])
            assert "managed-by" not in selector


def test_an_unvendored_version_is_refused_with_the_versions_we_have():
    with pytest.raises(PermanentError, match=r"operator.version '9.9.9'.*vendored versions: \['1.7.0'\]"):
        render_operator_manifests("9.9.9", "default", stack="s")


def test_a_new_vendored_version_renders_its_own_image(tmp_path):
    shutil.copytree(DEFAULT_VENDOR_ROOT / "v1.7.0", tmp_path / "v1.7.1")
    overlay = tmp_path / "v1.7.1/ray-operator/config/default/kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("newTag: v1.7.0", "newTag: v1.7.1"))
    deployment = render_operator_manifests("1.7.1", "default", stack="s", root=tmp_path)[-1]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/kuberay/operator:v1.7.1"


def test_plan_operator_skips_objects_whose_fields_all_match_the_live_ones():
    rendered = render_operator_manifests("1.7.0", "default", stack="s")
    live = copy.deepcopy(rendered)
    for obj in live:          # what a server adds must not count as a difference
        obj["metadata"].update(uid="u", resourceVersion="7", managedFields=[])
        obj["status"] = {"conditions": []}
    live[-1]["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    assert plan_operator(rendered, live) == []
    live[-1]["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/kuberay/operator:v1.6.0"
    live[0] = None
    assert kinds(plan_operator(rendered, live)) == [("CustomResourceDefinition", "rayclusters.ray.io"),
                                                    ("Deployment", "kuberay-operator")]


def test_an_operator_someone_else_installed_is_only_taken_over_when_adopting():
    rendered = render_operator_manifests("1.7.0", "default", stack="s")
    live = [None] * len(rendered)
    helm = copy.deepcopy(rendered[-1])
    helm["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "Helm"}
    live[-1] = helm
    with pytest.raises(NotOursError, match=r"Deployment default/kuberay-operator.*adopt_existing"):
        plan_operator(rendered, live)
    assert len(plan_operator(rendered, live, adopt_existing=True)) == len(rendered)


def test_is_subset_compares_lists_item_by_item():
    assert is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}], "b": 3})
    assert not is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]})
    assert not is_subset({"a": "1"}, {"a": 1})


# -- RayService plans ---------------------------------------------------------------------------

def as_applied(manifest, generation=1):
    """What the API server holds (or would hold, in a dry run) for `manifest`: defaults filled in."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(generation=generation, resourceVersion="10", uid="u")
    live["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = \
        "IfNotPresent"
    live["status"] = {"serviceStatus": "Running"}
    return live


def plan(live, desired, allow=False):
    return plan_ray_service(live, as_applied(desired), stack="deepseek-r1", allow_cluster_recreate=allow,
                            gpus_per_cluster=16)


def test_an_absent_rayservice_is_created_and_an_equal_one_left_alone():
    desired = ray_service_manifest(spec())
    assert plan_ray_service(None, None, stack="deepseek-r1", allow_cluster_recreate=False,
                            gpus_per_cluster=16).action is Action.CREATE
    assert plan(as_applied(desired), desired).action is Action.NOOP


def test_a_serve_config_change_is_applied_in_place():
    live = as_applied(ray_service_manifest(spec()))
    p = plan(live, ray_service_manifest(spec(max_num_seqs=64)))
    assert p.action is Action.UPDATE_IN_PLACE and p.changed_paths == ["spec.serveConfigV2"]


def test_removing_the_hf_token_is_a_change_that_rebuilds_the_cluster():
    live = as_applied(ray_service_manifest(spec(), hf_token=True))
    with pytest.raises(DriftError, match=r"containers\[0\]\.env"):
        plan(live, ray_service_manifest(spec()))


def test_lease_labels_and_replica_counts_change_in_place():
    live = as_applied(ray_service_manifest(spec(), lease_expiry_epoch_s=100))
    p = plan(live, ray_service_manifest(spec(), lease_expiry_epoch_s=200))
    assert p.action is Action.UPDATE_IN_PLACE and p.changed_paths == ["metadata.labels.gke-llm-flows-lease-expiry"]


def test_a_cluster_change_is_refused_because_it_needs_twice_the_gpus():
    live = as_applied(ray_service_manifest(spec()))
    desired = ray_service_manifest(spec(ray_image="rayproject/ray-llm:2.53.0-py311-cu128"))
    with pytest.raises(DriftError, match=r"twice the GPUs \(32 nvidia.com/gpu instead of 16\)") as e:
        plan(live, desired)
    assert "allow_cluster_recreate" in str(e.value) and "image" in str(e.value)


def test_an_allowed_cluster_change_goes_blue_green_or_recreates_with_strategy_none():
    live = as_applied(ray_service_manifest(spec()))
    assert plan(live, ray_service_manifest(spec(ray_image="x:2")), allow=True).action is Action.NEW_CLUSTER
    desired = ray_service_manifest(spec(ray_image="x:2", upgrade_strategy="None"))
    assert plan(live, desired, allow=True).action is Action.RECREATE


def test_a_rayservice_without_our_labels_is_not_touched():
    live = as_applied(ray_service_manifest(spec()))
    live["metadata"]["labels"] = {"app": "someone-elses"}
    with pytest.raises(NotOursError, match="deepseek-r1"):
        plan(live, ray_service_manifest(spec()))


def test_changed_paths_names_additions_removals_and_changes():
    assert changed_paths({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 3]}}) == ["a.b", "a.c[1]"]
    assert changed_paths({"a": {"n": 1}}, {"a": {}}) == ["a.n"]
    assert changed_paths({"a": {}}, {"a": {"n": 1}}) == ["a.n"]
    assert changed_paths({"a": [1]}, {"a": [1, 2]}) == ["a"]

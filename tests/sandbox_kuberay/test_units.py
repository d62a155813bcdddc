"""Pure pieces of the simulation: quantities, GKE allocatable, scheduler wording, tolerations,
cluster hashes, Ray version naming and model sizes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sandbox.kube.controllers.kuberay import cluster_hash
from sandbox.kube.controllers.resources import (
    format_memory,
    gke_allocatable_cpu,
    gke_allocatable_memory,
    machine_shape,
    parse_quantity,
)
from sandbox.kube.controllers.scheduler import tolerates, unschedulable_message
from sandbox.kube.rayserve import deployment_names, model_size_gb, ray_version_of
from sandbox.profile import load_profile
from tests.sandbox_kuberay.conftest import sample_rayservice


@pytest.mark.parametrize(("text", "value"), [("100m", Decimal("0.1")), ("2", Decimal(2)), ("32Gi", Decimal(32 * 2**30)),
                                             ("1.5G", Decimal(1_500_000_000)), ("512Mi", Decimal(512 * 2**20))])
def test_quantities_parse_as_kubernetes_writes_them(text, value):
    assert parse_quantity(text) == value


def test_a_bad_quantity_is_named_in_the_error():
    with pytest.raises(ValueError, match="'12 cores'"):
        parse_quantity("12 cores")


def test_gke_reserves_cpu_and_memory_by_its_published_tiers():
    assert gke_allocatable_cpu(16) == Decimal("15.89")        # 6% + 1% + 2 x 0.5% + 12 x 0.25%
    # 64 GiB: 1 + 0.8 + 0.8 + 48 x 6% = 5.48 GiB reserved, plus the 100 MiB eviction threshold.
    assert format_memory(gke_allocatable_memory(64)) == format_memory((Decimal(64) - Decimal("5.48")
                                                                       - Decimal(100) / 1024) * 2**30)


def test_machine_shapes_know_the_guides_machines_and_derive_standard_ones():
    assert machine_shape("a3-highgpu-8g") == (208, 1872, 8, "nvidia-h100-80gb")
    assert machine_shape("e2-standard-16")[:2] == (16, 64)
    assert machine_shape("n2-highmem-8")[:2] == (8, 64.0)
    with pytest.raises(ValueError, match="unknown machine type 'x1-weird'"):
        machine_shape("x1-weird")


def test_the_scheduler_message_sorts_count_prefixed_reasons_as_upstream():
    # kube-scheduler's FitError sorts the "<count> <reason>" strings, so counts order the parts.
    message = unschedulable_message({"Insufficient nvidia.com/gpu": 2,
                                     "node(s) had untolerated taint {nvidia.com/gpu: present}": 1}, 2, 3)
    assert message == ("0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, "
                       "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 1 Preemption is not "
                       "helpful for scheduling, 2 No preemption victims found for incoming pod.")
    assert unschedulable_message({}, 0, 0) == "no nodes available to schedule pods"


def test_gpu_requests_tolerate_the_gpu_taint_like_gkes_extended_resource_toleration():
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    gpu_pod = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    head = {"spec": {"containers": [{"resources": {"requests": {"cpu": "2"}}}]}}
    tolerant = {"spec": {"containers": [{}], "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                             "effect": "NoSchedule"}]}}
    assert tolerates(gpu_pod, taint) and tolerates(tolerant, taint) and not tolerates(head, taint)


def test_cluster_hash_ignores_replicas_and_tolerations_but_not_images():
    config = sample_rayservice()["spec"]["rayClusterConfig"]
    scaled = sample_rayservice()["spec"]["rayClusterConfig"]
    scaled["workerGroupSpecs"][0].update(replicas=3, maxReplicas=3)
    scaled["workerGroupSpecs"][0]["template"]["spec"]["tolerations"] = []
    assert cluster_hash(config) == cluster_hash(scaled)
    new_image = sample_rayservice()["spec"]["rayClusterConfig"]
    new_image["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "rayproject/ray-llm:2.53.0-py311-cu128"
    assert cluster_hash(config) != cluster_hash(new_image)


@pytest.mark.parametrize(("image", "names"), [
    ("rayproject/ray-llm:2.52.0-py311-cu128", ("LLMServer:deepseek", "OpenAiIngress")),
    ("rayproject/ray-llm:2.46.0-py311-cu124", ("LLMDeployment:deepseek", "LLMRouter")),
    ("rayproject/ray-llm:nightly-py311-cu128", ("LLMServer:deepseek", "OpenAiIngress")),
])
def test_deployments_are_named_as_the_images_ray_version_reports_them(image, names):
    assert deployment_names(ray_version_of(image), "deepseek") == names


def test_model_sizes_come_from_the_catalogue_or_the_parameter_count_else_unknown():
    profile = load_profile("realistic")
    assert model_size_gb("deepseek-ai/DeepSeek-R1", profile) == 688
    assert model_size_gb("Qwen/Qwen3-32B", profile) == 64
    assert model_size_gb("deepseek-ai/DeepSeek-R2", profile) is None


def test_node_selectors_and_required_affinity_filter_nodes():
    from sandbox.kube.controllers.scheduler import matches_node_affinity
    node = {"metadata": {"labels": {"cloud.google.com/gke-nodepool": "gpu-node-pool", "gpus": "8"}}}
    assert matches_node_affinity({"spec": {"nodeSelector": {"cloud.google.com/gke-nodepool": "gpu-node-pool"}}}, node)
    assert not matches_node_affinity({"spec": {"nodeSelector": {"cloud.google.com/gke-nodepool": "other"}}}, node)
    term = {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["4"]},
                                 {"key": "spot", "operator": "DoesNotExist"}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    assert matches_node_affinity({"spec": {"affinity": affinity}}, node)
    term["matchExpressions"][0]["operator"] = "Lt"
    assert not matches_node_affinity({"spec": {"affinity": affinity}}, node)


def test_every_documented_fault_kind_is_listed_with_its_parameters():
    import re

    import sandbox.kube.controllers as controllers
    rows = [line.split("|")[1] for line in controllers.__doc__.splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert documented == set(controllers.KUBE_FAULT_PARAMS)

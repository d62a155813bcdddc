"""The stack spec: defaults equal to the guide, YAML round-trip, examples, patches."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.errors import SpecError
from blocks.spec import GUIDE_PROMPT, CapacityMode, GpuPoolSpec, StackSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def default_spec() -> StackSpec:
    return StackSpec(cluster={"project": "my-gcp-project"})


def test_defaults_reproduce_the_guides_gcloud_commands():
    spec = default_spec()
    c, pool = spec.cluster, spec.gpu_pool
    assert (c.name, c.location, c.machine_type, c.node_count, c.image_streaming) == (
        "kuberay-gpu-cluster", "us-east5-a", "e2-standard-16", 1, True)
    assert (pool.name, pool.machine_type, pool.accelerator_type, pool.accelerator_count, pool.node_count) == (
        "gpu-node-pool", "a3-highgpu-8g", "nvidia-h100-80gb", 8, 2)
    assert pool.node_locations == ["us-east5-a"]
    assert pool.host_maintenance_interval == "PERIODIC"
    assert pool.capacity_modes == [CapacityMode.ON_DEMAND]
    assert spec.operator.version == "1.7.0"


def test_defaults_reproduce_the_samples_serve_config():
    s = default_spec().serving
    assert (s.ray_service_name, s.model_id, s.model_source, s.accelerator_type) == (
        "deepseek-r1", "deepseek", "deepseek-ai/DeepSeek-R1", "H100")
    assert (s.tensor_parallel_size, s.pipeline_parallel_size, s.gpu_memory_utilization, s.dtype) == (
        8, 2, 0.92, "auto")
    assert (s.max_num_seqs, s.max_model_len, s.enable_chunked_prefill, s.enable_prefix_caching) == (
        40, 16384, True, True)
    assert s.runtime_env_vars == {"VLLM_USE_V1": "1"}
    assert s.ray_image == "rayproject/ray-llm:2.52.0-py311-cu128"
    assert (s.head_resources.cpu, s.head_resources.memory) == ("2", "32Gi")
    assert (s.worker_resources.cpu, s.worker_resources.memory, s.worker_gpus, s.worker_replicas) == (
        "24", "500Gi", 8, 2)


def test_default_validation_pattern_accepts_the_guides_answer_and_rejects_wrong_orders():
    import re

    spec = default_spec()
    pattern = re.compile(spec.validation.expected_pattern)
    assert spec.validation.prompt == GUIDE_PROMPT
    assert pattern.search("The final order from bottom to top is: red, yellow, blue, green.")
    assert pattern.search("6. Add green on top: red → yellow → blue → green.")
    assert pattern.search("Red, yellow, blue and green")
    assert not pattern.search("The final order is red, blue, yellow, green.")
    assert not pattern.search("green, blue, yellow, red")


def test_default_lifecycle_tears_down_on_failure():
    life = default_spec().lifecycle
    assert life.teardown_on_failure is True
    assert life.keep_for_debugging is False
    assert life.lease_s > 0


def test_pool_zone_follows_the_cluster_zone_when_not_given():
    spec = StackSpec(cluster={"project": "my-gcp-project", "location": "us-central1-c"})
    assert spec.gpu_pool.node_locations == ["us-central1-c"]
    spec = StackSpec(cluster={"project": "my-gcp-project", "location": "us-central1-c"},
                     gpu_pool={"name": "h100"})
    assert spec.gpu_pool.node_locations == ["us-central1-c"]
    spec = StackSpec(cluster={"project": "my-gcp-project", "location": "us-central1-c"},
                     gpu_pool=GpuPoolSpec(name="h100"))
    assert (spec.gpu_pool.name, spec.gpu_pool.node_locations) == ("h100", ["us-central1-c"])


def test_json_validation_raises_spec_error_too():
    with pytest.raises(SpecError, match="cluster.node_count: Input should be greater than 0"):
        StackSpec.model_validate_json('{"cluster": {"project": "my-gcp-project", "node_count": 0}}')


def test_yaml_round_trip_is_lossless(tmp_path):
    spec = default_spec().updated({
        "gpu_pool": {"capacity_modes": ["reservation", "spot", "on-demand"], "reservation_name": "r-h100",
                     "placement_policy_name": "compact-a3", "fallback_zones": ["us-east5-b"],
                     "local_ssd_count": 16},
        "cluster": {"resource_labels": {"team": "ml"}, "release_channel": "STABLE"},
        "serving": {"worker_resources": {"cpu": 100, "memory": "1000Gi", "ephemeral_storage": "1500Gi"}},
    })
    path = tmp_path / "stack.yaml"
    text = spec.to_yaml(path)
    assert path.read_text() == text
    again = StackSpec.from_yaml(path)
    assert again == spec
    assert again.to_yaml() == text
    assert again.serving.worker_resources.cpu == "100"  # a YAML int becomes the quantity string


@pytest.mark.parametrize("name", ["deepseek-r1.yaml", "sandbox.yaml"])
def test_examples_load_and_round_trip(name):
    spec = StackSpec.from_yaml(EXAMPLES / name)
    assert StackSpec.from_yaml_text(spec.to_yaml()) == spec


def test_guide_example_equals_the_defaults():
    assert StackSpec.from_yaml(EXAMPLES / "deepseek-r1.yaml") == default_spec()


def test_sandbox_example_differs_from_the_guide_only_in_endpoint_and_project():
    sandbox = StackSpec.from_yaml(EXAMPLES / "sandbox.yaml")
    assert sandbox.cluster.api_endpoint == "http://127.0.0.1:8089"
    assert sandbox.cluster.project == "sandbox-project"
    guide = default_spec().updated({"cluster": {"project": "sandbox-project",
                                                "api_endpoint": "http://127.0.0.1:8089"}})
    assert sandbox == guide


def test_updated_revalidates_and_returns_a_new_spec():
    spec = default_spec()
    changed = spec.updated({"serving": {"tensor_parallel_size": 8, "pipeline_parallel_size": 3,
                                        "worker_replicas": 3}, "gpu_pool": {"node_count": 3}})
    assert changed.gpu_pool.node_count == 3 and spec.gpu_pool.node_count == 2
    with pytest.raises(SpecError, match="gpu_pool.node_count"):
        spec.updated({"gpu_pool": {"node_count": 3}})


def test_updated_replaces_user_mappings_instead_of_merging():
    spec = default_spec().updated({"serving": {"runtime_env_vars": {"A": "1"}}})
    assert spec.updated({"serving": {"runtime_env_vars": {"B": "2"}}}).serving.runtime_env_vars == {"B": "2"}


def test_sections_validate_on_their_own_and_raise_spec_error():
    with pytest.raises(SpecError) as info:
        GpuPoolSpec(machine_type="g2-standard-8")
    assert any(p.startswith("accelerator_type: 'nvidia-h100-80gb'") for p in info.value.problems)


def test_model_validate_raises_spec_error_not_pydantics():
    with pytest.raises(SpecError) as info:
        StackSpec.model_validate({"cluster": {}})
    assert info.value.problems == ["cluster.project: required field is missing"]


def test_every_field_has_a_description():
    from pydantic import BaseModel

    def walk(model: type[BaseModel]):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation)

    walk(StackSpec)

"""Validation: every rule names the field, echoes the bad value and says what is accepted."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.errors import SpecError
from blocks.spec import StackSpec

BASE = {"cluster": {"project": "my-gcp-project"}}


def merged(patch: dict) -> dict:
    data = copy.deepcopy(BASE)
    for section, fields in patch.items():
        if isinstance(fields, dict) and isinstance(data.get(section), dict):
            data[section].update(fields)
        else:
            data[section] = fields
    return data


def problems_of(patch: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        StackSpec.parse(merged(patch))
    assert info.value.problems, "a SpecError must carry problems"
    return info.value.problems


def the_problem(patch: dict, field: str) -> str:
    problems = problems_of(patch)
    matching = [p for p in problems if p.startswith(field + ":") or p.startswith(field + ".")]
    assert matching, f"no problem names {field!r}: {problems}"
    return matching[0]


# (patch, field the problem names, fragments: the bad value and what is accepted)
RULES = [
    # GKE name rules
    ({"cluster": {"name": "Kuberay"}}, "cluster.name", ["'Kuberay'", "lowercase letter first"]),
    ({"cluster": {"name": "1cluster"}}, "cluster.name", ["'1cluster'", "1-40 characters"]),
    ({"cluster": {"name": "a" * 41}}, "cluster.name", ["'" + "a" * 41 + "'", "1-40 characters"]),
    ({"cluster": {"name": "gpu-"}}, "cluster.name", ["'gpu-'", "not ending with a hyphen"]),
    ({"cluster": {"name": "gpu_pool"}}, "cluster.name", ["'gpu_pool'", "hyphens"]),
    ({"gpu_pool": {"name": "GPU pool"}}, "gpu_pool.name", ["'GPU pool'", "lowercase letter first"]),
    ({"name": "DeepSeek"}, "name", ["'DeepSeek'", "e.g. 'deepseek-r1'"]),
    ({"serving": {"ray_service_name": "r" * 41}}, "serving.ray_service_name", ["1-40 characters"]),
    ({"serving": {"namespace": "Default"}}, "serving.namespace", ["'Default'", "e.g. 'default'"]),
    ({"cluster": {"project": "P"}}, "cluster.project", ["'P'", "6-30 characters"]),
    # zone formats and regions
    ({"cluster": {"location": "useast5a"}}, "cluster.location", ["'useast5a'", "e.g. 'us-east5-a'"]),
    ({"gpu_pool": {"node_locations": ["us-east5"]}}, "gpu_pool.node_locations[0]",
     ["'us-east5'", "e.g. 'us-east5-a'"]),
    ({"gpu_pool": {"fallback_zones": ["us-east5-a", "east"]}}, "gpu_pool.fallback_zones[1]", ["'east'"]),
    ({"gpu_pool": {"node_locations": ["us-central1-a"]}}, "gpu_pool.node_locations",
     ["['us-central1-a']", "outside the cluster's region 'us-east5'", "'us-east5-a'"]),
    ({"gpu_pool": {"fallback_zones": ["europe-west4-b"]}}, "gpu_pool.fallback_zones",
     ["['europe-west4-b']", "'us-east5-a'"]),
    ({"gpu_pool": {"fallback_zones": ["us-east5-a"]}}, "gpu_pool.fallback_zones", ["repeats", "distinct"]),
    # accelerator / machine compatibility
    ({"gpu_pool": {"machine_type": "a3-megagpu-8g"}}, "gpu_pool.accelerator_type",
     ["'nvidia-h100-80gb'", "'a3-megagpu-8g'", "accepted: 'nvidia-h100-mega-80gb'"]),
    ({"gpu_pool": {"machine_type": "a3-ultragpu-8g"}}, "gpu_pool.accelerator_type",
     ["accepted: 'nvidia-h200-141gb'"]),
    ({"gpu_pool": {"accelerator_type": "nvidia-h200-141gb"}}, "gpu_pool.accelerator_type",
     ["'nvidia-h200-141gb'", "accepted: 'nvidia-h100-80gb'", "['a3-ultragpu-8g']"]),
    ({"gpu_pool": {"machine_type": "g2-standard-8"}}, "gpu_pool.accelerator_type", ["accepted: 'nvidia-l4'"]),
    ({"gpu_pool": {"machine_type": "a2-highgpu-8g"}}, "gpu_pool.accelerator_type",
     ["accepted: 'nvidia-tesla-a100'"]),
    ({"gpu_pool": {"machine_type": "a2-ultragpu-8g"}}, "gpu_pool.accelerator_type",
     ["accepted: 'nvidia-a100-80gb'"]),
    ({"gpu_pool": {"accelerator_count": 4}}, "gpu_pool.accelerator_count", ["4", "accepted: 8"]),
    ({"gpu_pool": {"machine_type": "a3-highgpu-4g"}}, "gpu_pool.machine_type",
     ["'a3-highgpu-4g'", "a3-highgpu-8g", "g2-standard-4"]),
    ({"gpu_pool": {"local_ssd_count": 4}}, "gpu_pool.local_ssd_count", ["4", "accepted: 16"]),
    ({"serving": {"accelerator_type": "A100-80G"}}, "serving.accelerator_type",
     ["'A100-80G'", "accepted: 'H100'"]),
    # parallelism, workers and nodes
    ({"serving": {"tensor_parallel_size": 4}}, "serving.tensor_parallel_size x serving.pipeline_parallel_size",
     ["4 x 2 = 8 GPUs", "2 x 8 = 16"]),
    ({"serving": {"max_replicas": 2}}, "serving.tensor_parallel_size x serving.pipeline_parallel_size",
     ["x max_replicas 2 = 32"]),
    ({"serving": {"min_replicas": 2, "max_replicas": 1}}, "serving.min_replicas", ["2", "at most 1"]),
    ({"gpu_pool": {"node_count": 3}}, "gpu_pool.node_count", ["3", "accepted: 2", "idle nodes"]),
    ({"gpu_pool": {"node_count": 1}}, "gpu_pool.node_count", ["1", "accepted: 2", "Pending"]),
    ({"serving": {"worker_gpus": 16, "worker_replicas": 1}}, "serving.worker_gpus", ["16", "at most 8"]),
    # pods fit the machines
    ({"serving": {"worker_resources": {"cpu": "209", "memory": "500Gi"}}}, "serving.worker_resources.cpu",
     ["'209'", "208 vCPU", "at most 208"]),
    ({"serving": {"worker_resources": {"cpu": "24", "memory": "1873Gi"}}}, "serving.worker_resources.memory",
     ["'1873Gi'", "1872 GiB", "at most 1872Gi"]),
    ({"serving": {"head_resources": {"cpu": "17", "memory": "32Gi"}}}, "serving.head_resources.cpu",
     ["'17'", "'e2-standard-16'", "at most 16"]),
    ({"serving": {"head_resources": {"cpu": "2", "memory": "65Gi"}}}, "serving.head_resources.memory",
     ["'65Gi'", "64 GiB", "at most 64Gi"]),
    ({"validation": {"base_url": "localhost:8000"}}, "validation.base_url", ["'localhost:8000'"]),
    ({"operator": {"namespace": "Ray_System"}}, "operator.namespace", ["'Ray_System'"]),
    ({"serving": {"hf_token_secret_key": "bad key"}}, "serving.hf_token_secret_key", ["'bad key'"]),
    ({"serving": {"worker_resources": {"cpu": "24", "memory": "lots"}}}, "serving.worker_resources.memory",
     ["'lots'", "'32Gi'"]),
    # capacity modes
    ({"gpu_pool": {"capacity_modes": ["reservation"]}}, "gpu_pool.reservation_name",
     ["None", "'reservation'", "name of a specific reservation"]),
    ({"gpu_pool": {"reservation_name": "r1"}}, "gpu_pool.reservation_name", ["'r1'", "add 'reservation'"]),
    ({"gpu_pool": {"capacity_modes": ["spot", "spot"]}}, "gpu_pool.capacity_modes", ["['spot', 'spot']"]),
    ({"gpu_pool": {"capacity_modes": ["cheap"]}}, "gpu_pool.capacity_modes[0]",
     ["'cheap'", "'on-demand', 'spot', 'reservation', 'flex-start' or 'queued'"]),
    ({"gpu_pool": {"capacity_modes": []}}, "gpu_pool.capacity_modes", ["at least 1"]),
    ({"gpu_pool": {"max_run_duration_s": 3600}}, "gpu_pool.max_run_duration_s", ["3600", "flex-start"]),
    # validation prompt and pattern
    ({"validation": {"prompt": ""}}, "validation.prompt", ["''", "non-empty"]),
    ({"validation": {"prompt": "  \n"}}, "validation.prompt", ["non-empty"]),
    ({"validation": {"expected_pattern": "red(yellow"}}, "validation.expected_pattern",
     ["'red(yellow'", "valid regular expression", "Python `re` syntax"]),
    ({"validation": {"max_tokens": 16384}}, "validation.max_tokens", ["16384", "less than 16384"]),
    # zero or negative counts and timeouts
    ({"cluster": {"node_count": 0}}, "cluster.node_count", ["greater than 0", "(got 0)"]),
    ({"gpu_pool": {"node_count": -1}}, "gpu_pool.node_count", ["greater than 0", "(got -1)"]),
    ({"gpu_pool": {"accelerator_count": 0}}, "gpu_pool.accelerator_count", ["greater than 0"]),
    ({"serving": {"tensor_parallel_size": 0}}, "serving.tensor_parallel_size", ["greater than 0"]),
    ({"serving": {"pipeline_parallel_size": -2}}, "serving.pipeline_parallel_size", ["(got -2)"]),
    ({"serving": {"worker_replicas": 0}}, "serving.worker_replicas", ["greater than 0"]),
    ({"serving": {"worker_gpus": 0}}, "serving.worker_gpus", ["greater than 0"]),
    ({"serving": {"gpu_memory_utilization": 1.5}}, "serving.gpu_memory_utilization", ["less than or equal to 1"]),
    ({"validation": {"max_tokens": 0}}, "validation.max_tokens", ["greater than 0"]),
    ({"validation": {"timeout_s": 0}}, "validation.timeout_s", ["greater than 0", "(got 0)"]),
    ({"timeouts": {"model_load_s": -5}}, "timeouts.model_load_s", ["greater than 0", "(got -5)"]),
    ({"timeouts": {"cluster_create_s": 0}}, "timeouts.cluster_create_s", ["greater than 0"]),
    ({"lifecycle": {"lease_s": 0}}, "lifecycle.lease_s", ["greater than 0"]),
    ({"lifecycle": {"lease_s": 3600}}, "lifecycle.lease_s", ["3600", "more than 7200"]),
    # labels, env, timezone, endpoint, unknown and missing fields
    ({"cluster": {"resource_labels": {"Team": "ml"}}}, "cluster.resource_labels", ["'Team'"]),
    ({"cluster": {"resource_labels": {"managed-by": "me"}}}, "cluster.resource_labels",
     ["'managed-by'", "reserved"]),
    ({"cluster": {"resource_labels": {"team": "ML Ops"}}}, "cluster.resource_labels", ["'ML Ops'"]),
    ({"serving": {"runtime_env_vars": {"1BAD": "x"}}}, "serving.runtime_env_vars", ["'1BAD'", "VLLM_USE_V1"]),
    ({"lifecycle": {"schedule_timezone": "Mars/Olympus"}}, "lifecycle.schedule_timezone",
     ["'Mars/Olympus'", "'UTC'"]),
    ({"cluster": {"api_endpoint": "127.0.0.1:8089"}}, "cluster.api_endpoint",
     ["'127.0.0.1:8089'", "'http://127.0.0.1:8089'"]),
    ({"serving": {"dtype": "fp8"}}, "serving.dtype", ["'fp8'", "'bfloat16'"]),
    ({"gpu_pool": {"host_maintenance_interval": "WEEKLY"}}, "gpu_pool.host_maintenance_interval",
     ["'WEEKLY'", "'PERIODIC'"]),
    ({"gpu_pool": {"acelerator_type": "nvidia-h100-80gb"}}, "gpu_pool.acelerator_type",
     ["unknown field", "accelerator_type"]),
    ({"cluster": {"project": None}}, "cluster.project", ["None"]),
    ({"operator": {"version": "latest"}}, "operator.version", ["'latest'"]),
]

@pytest.mark.parametrize(("patch", "field", "fragments"), RULES,
                         ids=[f"{r[1]}-{i}" for i, r in enumerate(RULES)])
def test_rule_names_field_value_and_what_is_accepted(patch, field, fragments):
    problem = the_problem(patch, field)
    for fragment in fragments:
        assert fragment in problem, f"{fragment!r} missing from {problem!r}"


def test_missing_project_is_named():
    with pytest.raises(SpecError) as info:
        StackSpec.parse({})
    assert info.value.problems == ["cluster: required field is missing"]


def test_a_non_mapping_document_is_named():
    with pytest.raises(SpecError) as info:
        StackSpec.parse(["not", "a", "stack"])
    assert info.value.problems[0].startswith("StackSpec: Input should be a valid dictionary")


def test_invalid_yaml_is_a_spec_error_naming_the_file():
    with pytest.raises(SpecError) as info:
        StackSpec.from_yaml_text("cluster: [unclosed", source="stack.yaml")
    assert "stack.yaml" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_all_field_problems_come_in_one_error():
    problems = problems_of({
        "name": "Bad Name",
        "cluster": {"name": "X", "node_count": 0},
        "validation": {"prompt": "", "expected_pattern": "("},
        "lifecycle": {"lease_s": -1},
    })
    fields = {p.split(":")[0] for p in problems}
    assert fields == {"name", "cluster.name", "cluster.node_count", "validation.prompt",
                      "validation.expected_pattern", "lifecycle.lease_s"}


def test_all_cross_field_problems_come_in_one_error():
    problems = problems_of({
        "gpu_pool": {"machine_type": "a3-megagpu-8g", "capacity_modes": ["reservation"], "node_count": 3},
        "serving": {"tensor_parallel_size": 4, "worker_resources": {"cpu": 300, "memory": "3000Gi"},
                    "accelerator_type": "L4"},
    })
    fields = {p.split(":")[0] for p in problems}
    assert {"gpu_pool.accelerator_type", "gpu_pool.reservation_name"} <= fields
    # cross-section rules report together once each section is valid on its own
    problems = problems_of({"gpu_pool": {"node_count": 3},
                            "serving": {"tensor_parallel_size": 4, "accelerator_type": "L4",
                                        "worker_resources": {"cpu": 300, "memory": "3000Gi"}}})
    fields = {p.split(":")[0] for p in problems}
    assert fields == {"serving.accelerator_type", "serving.tensor_parallel_size x serving.pipeline_parallel_size",
                      "gpu_pool.node_count", "serving.worker_resources.cpu", "serving.worker_resources.memory"}


# Every GPU family the validator knows, with a consistent serving shape: these are accepted.
VALID_SHAPES = [
    ({"machine_type": "a3-megagpu-8g", "accelerator_type": "nvidia-h100-mega-80gb"}, {}),
    ({"machine_type": "a3-ultragpu-8g", "accelerator_type": "nvidia-h200-141gb", "local_ssd_count": 32},
     {"accelerator_type": "H200"}),
    ({"machine_type": "g2-standard-96", "accelerator_type": "nvidia-l4"},
     {"accelerator_type": "L4", "worker_resources": {"cpu": "48", "memory": "300Gi"}}),
    ({"machine_type": "g2-standard-8", "accelerator_type": "nvidia-l4", "accelerator_count": 1},
     {"accelerator_type": "L4", "tensor_parallel_size": 1, "worker_gpus": 1,
      "worker_resources": {"cpu": "4", "memory": "16Gi"}, "max_model_len": 8192}),
    ({"machine_type": "a2-highgpu-8g", "accelerator_type": "nvidia-tesla-a100"},
     {"accelerator_type": "A100-40G", "worker_resources": {"cpu": "48", "memory": "600Gi"}}),
    ({"machine_type": "a2-ultragpu-8g", "accelerator_type": "nvidia-a100-80gb"},
     {"accelerator_type": "A100-80G"}),
    ({"node_count": 1}, {"worker_gpus": 4, "worker_replicas": 2, "tensor_parallel_size": 4,
                         "worker_resources": {"cpu": "100", "memory": "900Gi"}}),
]


@pytest.mark.parametrize(("pool", "serving"), VALID_SHAPES)
def test_consistent_gpu_shapes_are_accepted(pool, serving):
    spec = StackSpec.parse(merged({"gpu_pool": pool, "serving": serving}))
    assert spec.gpu_pool.machine_type == pool.get("machine_type", "a3-highgpu-8g")


def test_two_workers_per_node_must_fit_together():
    # 2 workers of 4 GPUs share one 8-GPU node: 2 x 1000Gi does not fit its 1872 GiB
    problem = the_problem({"gpu_pool": {"node_count": 1},
                           "serving": {"worker_gpus": 4, "worker_replicas": 2, "tensor_parallel_size": 4,
                                       "worker_resources": {"cpu": "24", "memory": "1000Gi"}}},
                          "serving.worker_resources.memory")
    assert "'1000Gi' x 2 pods per node" in problem and "at most 936Gi" in problem


# ---- property: random specs never crash with anything but SpecError, and every problem names a field

TOP_FIELDS = set(StackSpec.model_fields)
SECTION_FIELDS = {name: list(getattr(field.annotation, "model_fields", {}))
                  for name, field in StackSpec.model_fields.items()}
WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "us-east5-a", "a3-highgpu-8g", "nvidia-l4", "reservation", "(", "1e999", "32Gi",
                     "http://x", "UTC", "../etc/passwd", "\x00", "PERIODIC", "deepseek-r1"]),
    st.lists(st.sampled_from(["spot", "on-demand", "us-east5-b", 3, None]), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers()), max_size=3),
)


DEFAULT_DATA = yaml.safe_load(StackSpec(cluster={"project": "my-gcp-project"}).to_yaml())


@st.composite
def random_stack(draw):
    data = copy.deepcopy(DEFAULT_DATA)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        section = draw(st.sampled_from(sorted(TOP_FIELDS) + ["bogus"]))
        if section in SECTION_FIELDS and SECTION_FIELDS[section] and draw(st.booleans()):
            field = draw(st.sampled_from(SECTION_FIELDS[section] + ["unknown_field"]))
            if not isinstance(data.get(section), dict):
                data[section] = {}
            data[section][field] = draw(WEIRD)
        else:
            data[section] = draw(WEIRD)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_stack())
def test_random_specs_raise_only_spec_errors_that_name_fields(data):
    try:
        StackSpec.parse(data)
    except SpecError as e:
        assert e.problems
        for problem in e.problems:
            head = re.split(r"[.:\[ ]", problem, maxsplit=1)[0]
            assert head in TOP_FIELDS | {"bogus", "StackSpec"}, problem
            assert ": " in problem, problem


@pytest.mark.parametrize(("patch", "field"), [
    ({"cluster": {"name": "kuberay\n"}}, "cluster.name"),
    ({"cluster": {"location": "us-east5-a\n"}}, "cluster.location"),
    ({"serving": {"ray_service_name": "deepseek\n"}}, "serving.ray_service_name"),
    ({"serving": {"worker_resources": {"cpu": "24\n", "memory": "500Gi"}}}, "serving.worker_resources.cpu"),
    ({"cluster": {"api_endpoint": "http://127.0.0.1:8089\n"}}, "cluster.api_endpoint"),
])
def test_a_trailing_newline_does_not_sneak_past_a_format(patch, field):
    the_problem(patch, field)


def test_streaming_the_weights_needs_a_bucket_source():
    [problem] = problems_of({"serving": {"stream_weights": True}})
    assert problem.startswith("serving.stream_weights: true streams the weights out of a bucket")
    assert "'deepseek-ai/DeepSeek-R1'" in problem and "accepted: a gs://BUCKET/PATH model_source" in problem
    spec = StackSpec.parse(merged({"serving": {"stream_weights": True,
                                               "model_source": "gs://team-weights/deepseek-ai/DeepSeek-R1"}}))
    assert spec.serving.stream_weights

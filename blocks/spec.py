"""The stack spec: one named serving deployment, as pydantic v2 models with the guide's defaults.

`StackSpec` is what every other layer reads. Every field has a description, a bound and a unit in its
name where it has one; defaults reproduce the guide (seed/000_fc0464f8731d9aaa.txt) and the upstream
KubeRay sample `ray-service.deepseek.yaml`. Building a spec (constructor, `model_validate`, `from_yaml`,
`parse`) raises one `blocks.errors.SpecError` listing every problem, each naming its dotted field.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from blocks import formats
from blocks.errors import SpecError
from blocks.quantities import parse_quantity, quantity_text

GkeName = Annotated[str, AfterValidator(formats.gke_name)]
K8sName = Annotated[str, AfterValidator(formats.k8s_name)]
Namespace = Annotated[str, AfterValidator(formats.k8s_namespace)]
Zone = Annotated[str, AfterValidator(formats.zone)]
Labels = Annotated[dict[str, str], AfterValidator(formats.labels)]

# gs://BUCKET/PATH: bucket names are 3-63 of [a-z0-9._-], starting and ending alphanumeric (GCS naming).
_GCS_URI = r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[^\s]*)?$"


def _model_source(value: str) -> str:
    """A Hugging Face repo id / local path, or a gs:// URI that must name a valid bucket."""
    if value.startswith("gs://") and not re.match(_GCS_URI, value):
        raise ValueError(f"{value!r} is not a gs://BUCKET/PATH URI (bucket: 3-63 characters of a-z, 0-9, "
                         "'.', '_', '-', starting and ending with a letter or digit)")
    return value


def _quantity(value: str) -> str:
    parse_quantity(value)
    return value


Quantity = Annotated[str, BeforeValidator(quantity_text), AfterValidator(_quantity)]

GUIDE_PROMPT = (
    "I have four boxes. I put the red box on the bottom and put the blue box on top. Then I put the "
    "yellow box on top the blue. Then I take the blue box out and put it on top. And finally I put the "
    "green box on the top. Give me the final order of the boxes from bottom to top. Show your reasoning "
    "but be brief"
)
# Bottom to top: red, yellow, blue, green; separators may be commas, arrows or "and" (the guide's
# answer says both "red, yellow, blue, green" and "red → yellow → blue → green").
GUIDE_ANSWER_PATTERN = r"(?i)\bred\W+yellow\W+blue\W+(?:and\W+)?green\b"


class CapacityMode(str, Enum):
    """How the GPU pool gets its VMs; `gpu_pool.capacity_modes` lists them in the order to try."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVATION = "reservation"  # a specific reservation: gpu_pool.reservation_name
    FLEX_START = "flex-start"  # flex-start VMs (DWS), pool scales up from 0 on demand
    QUEUED = "queued"  # queued provisioning (DWS ProvisioningRequest)


class SpecModel(BaseModel):
    """Base of every spec section: unknown fields are errors, and errors come out as `SpecError`."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_default=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise spec_error_from(e, type(self)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse `true`/`false` for a number field: pydantic's lax mode would read `node_count: true`
        as 1. Numeric text ("2") and whole floats (2.0) stay accepted, as before."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            from blocks.validation import boolean_number_problem

            if problem := boolean_number_problem(cls.model_fields[info.field_name], value):
                raise ValueError(problem)
        return value

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):  # type: ignore[override]
        """Validate `obj` like pydantic does, raising `SpecError` instead of `ValidationError`."""
        if problems := non_string_keys(obj):
            raise SpecError(problems)
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise spec_error_from(e, cls) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any):  # type: ignore[override]
        """Validate JSON like pydantic does, raising `SpecError` instead of `ValidationError`."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as e:
            raise spec_error_from(e, cls) from None


class ClusterSpec(SpecModel):
    """The GKE cluster and its CPU (default) node pool: `gcloud container clusters create`."""

    project: Annotated[str, AfterValidator(formats.project_id)] = Field(
        description="GCP project id that owns the cluster")
    location: Annotated[str, AfterValidator(formats.zone_or_region)] = Field(
        "us-east5-a", description="GKE location: a zone for a zonal cluster (the guide's), or a region")
    name: GkeName = Field("kuberay-gpu-cluster", description="GKE cluster name")
    machine_type: str = Field("e2-standard-16", min_length=1, max_length=63,
                              description="machine type of the default CPU pool (runs the Ray head)")
    node_count: int = Field(1, gt=0, le=1000, description="nodes in the default CPU pool")
    image_streaming: bool = Field(True, description="GKE image streaming (gcfs) for faster image pulls")
    release_channel: Literal["RAPID", "REGULAR", "STABLE", "EXTENDED"] | None = Field(
        None, description="release channel; None = GKE's default (REGULAR)")
    cluster_version: str | None = Field(
        None, min_length=1, max_length=64, description="initial control-plane version; None = channel default")
    network: str | None = Field(None, min_length=1, max_length=1024, description="VPC network; None = 'default'")
    subnetwork: str | None = Field(None, min_length=1, max_length=1024, description="subnetwork; None = auto")
    resource_labels: Labels = Field(default_factory=dict, max_length=60,  # GCE allows 64, we add 4
                                    description="extra GCE labels on the cluster (owner labels are added)")
    adopt_existing: bool = Field(False, description="adopt an existing cluster without our owner labels")
    api_endpoint: Annotated[str, AfterValidator(formats.http_url)] | None = Field(
        None, description="GKE API base URL override; None = real GKE; sandbox: 'http://127.0.0.1:PORT'")


class GpuPoolSpec(SpecModel):
    """The GPU node pool: `gcloud beta container node-pools create` with the guide's flags."""

    name: GkeName = Field("gpu-node-pool", description="GPU node pool name")
    machine_type: str = Field("a3-highgpu-8g", min_length=1, max_length=63, description="GPU machine type")
    accelerator_type: str = Field("nvidia-h100-80gb", min_length=1, max_length=63,
                                  description="GKE accelerator type attached to each node")
    accelerator_count: int = Field(8, gt=0, le=16, description="GPUs per node")
    node_count: int = Field(2, gt=0, le=1000, description="GPU nodes (per zone in node_locations)")
    node_locations: list[Zone] = Field(default_factory=lambda: ["us-east5-a"], min_length=1, max_length=1,
                                       description="zone the pool's nodes live in (defaults to the "
                                                   "cluster's zone)")
    capacity_modes: list[CapacityMode] = Field(
        default_factory=lambda: [CapacityMode.ON_DEMAND], min_length=1, max_length=5,
        description="capacity modes to try, in order: on-demand, spot, reservation, flex-start, queued")
    reservation_name: str | None = Field(
        None, min_length=1, max_length=256,
        description="specific reservation consumed in 'reservation' mode (name or projects/P/reservations/R)")
    placement_policy_name: str | None = Field(
        None, min_length=1, max_length=63, description="existing compact placement policy; None = none")
    host_maintenance_interval: Literal["PERIODIC", "AS_NEEDED"] | None = Field(
        "PERIODIC", description="host maintenance interval (v1beta1 only); None = GKE's default")
    gpu_driver_version: Literal["LATEST", "DEFAULT", "INSTALLATION_DISABLED"] = Field(
        "LATEST", description="GKE-managed NVIDIA driver install")
    local_ssd_count: int | None = Field(
        None, ge=0, le=32, description="local SSDs for ephemeral storage; None = boot disk (gcloud default)")
    gvnic: bool = Field(False, description="enable gVNIC (recommended for A3 networking)")
    max_run_duration_s: int | None = Field(
        None, gt=0, le=7 * 24 * 3600, description="flex-start/queued VM lifetime; None = GKE's default")
    fallback_zones: list[Zone] = Field(default_factory=list, max_length=20,
                                       description="zones tried in order when node_locations is stocked out")

    @model_validator(mode="after")
    def _pool_rules(self) -> GpuPoolSpec:
        from blocks.validation import gpu_pool_problems

        if problems := gpu_pool_problems(self):
            raise SpecError(problems)
        return self


class OperatorSpec(SpecModel):
    """The KubeRay operator installed into the cluster."""

    version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = Field(
        "1.7.0", description="KubeRay operator version (the vendored manifests are 1.7.0)")
    namespace: Namespace = Field("default", description="namespace of the operator Deployment")


class ResourcesSpec(SpecModel):
    """CPU, memory and optional ephemeral storage of one Ray container (requests == limits)."""

    cpu: Quantity = Field(description="CPU cores, Kubernetes quantity (e.g. '24', '500m')")
    memory: Quantity = Field(description="memory, Kubernetes quantity (e.g. '500Gi')")
    ephemeral_storage: Quantity | None = Field(
        None, description="ephemeral-storage request/limit (model weights cache); None = unset")


class ServingSpec(SpecModel):
    """The RayService: Ray Serve LLM config (serveConfigV2 llm_config) and the Ray cluster shape."""

    ray_service_name: K8sName = Field("deepseek-r1", description="RayService name")
    namespace: Namespace = Field("default", description="namespace of the RayService")
    model_id: str = Field("deepseek", min_length=1, max_length=256, description="served model id (OpenAI 'model')")
    model_source: Annotated[str, AfterValidator(_model_source)] = Field(
        "deepseek-ai/DeepSeek-R1", min_length=1, max_length=1024,
        description="Hugging Face repo or path the weights load from, or gs://BUCKET/PATH: a copy staged by "
                    "stage_weights (Ray Serve LLM's cloud-storage source; see docs: Ray >= 2.46 images)")
    staged_from: str | None = Field(
        None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][-._A-Za-z0-9]*/[-._A-Za-z0-9]+$",
        description="Hugging Face repo (owner/name) that stage_weights copies into the gs:// model_source")
    accelerator_type: str = Field("H100", min_length=1, max_length=32,
                                  description="Ray accelerator type the LLM deployment schedules on")
    tensor_parallel_size: int = Field(8, gt=0, le=64, description="vLLM tensor parallel size (GPUs per stage)")
    pipeline_parallel_size: int = Field(2, gt=0, le=64, description="vLLM pipeline parallel size (stages)")
    gpu_memory_utilization: float = Field(0.92, gt=0, le=1, description="fraction of GPU memory vLLM uses")
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        "auto", description="vLLM dtype")
    max_num_seqs: int = Field(40, gt=0, le=100_000, description="vLLM max concurrent sequences")
    max_model_len: int = Field(16384, gt=0, le=10_000_000, description="vLLM max context length (tokens)")
    enable_chunked_prefill: bool = Field(True, description="vLLM chunked prefill")
    enable_prefix_caching: bool = Field(True, description="vLLM prefix caching")
    runtime_env_vars: Annotated[dict[str, str], AfterValidator(formats.env_vars)] = Field(
        default_factory=lambda: {"VLLM_USE_V1": "1"}, description="env vars of the LLM deployment's runtime_env")
    min_replicas: int = Field(1, gt=0, le=100, description="LLM engine replicas (autoscaling min)")
    max_replicas: int = Field(1, gt=0, le=100, description="LLM engine replicas (autoscaling max)")
    ray_image: str = Field("rayproject/ray-llm:2.52.0-py311-cu128", min_length=1, max_length=512,
                           description="Ray LLM container image for head and workers")
    head_resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(cpu="2", memory="32Gi"), description="Ray head container")
    worker_resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(cpu="24", memory="500Gi"), description="each Ray GPU worker")
    worker_gpus: int = Field(8, gt=0, le=16, description="GPUs per Ray worker pod (nvidia.com/gpu)")
    worker_replicas: int = Field(2, gt=0, le=1000, description="Ray GPU worker pods")
    worker_group_name: K8sName = Field("gpu-group", description="Ray worker group name")
    upgrade_strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] | None = Field(
        None, description="RayService upgradeStrategy.type; None = KubeRay's default (NewCluster)")
    prefetch_weights: bool = Field(
        True, description="download a Hugging Face model onto each GPU node while its GPU driver installs (a "
                          "DaemonSet without GPUs; the Ray workers find it in their cache): minutes sooner to the "
                          "answer. No effect for a gs:// source")
    stream_weights: bool = Field(
        False, description="stream a gs:// model_source straight into GPU memory with vLLM's Run:ai Model Streamer "
                           "(load_format runai_streamer) instead of copying it to disk and loading it after: one "
                           "pass instead of two. Needs vLLM >= 0.11.1 in ray_image (docs/going-live.md)")
    allow_cluster_recreate: bool = Field(
        False, description="allow a change that makes KubeRay build a new Ray cluster (reloads the model)")
    hf_token_secret_name: K8sName = Field(
        "hf-token", description="Kubernetes Secret holding the HF token, used only when one is configured")
    hf_token_secret_key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]{1,253}$")] = Field(
        "hf_token", description="key of the token inside that Secret")


class ValidationSpec(SpecModel):
    """The chat completion that proves the endpoint serves the model correctly."""

    prompt: Annotated[str, AfterValidator(formats.not_blank)] = Field(
        GUIDE_PROMPT, max_length=100_000, description="user message sent to the model")
    expected_pattern: Annotated[str, AfterValidator(formats.regex)] = Field(
        GUIDE_ANSWER_PATTERN, min_length=1, max_length=10_000, description="regex the answer must match")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature (the guide's 0.7)")
    max_tokens: int = Field(4096, gt=0, le=1_000_000, description="completion token budget")
    timeout_s: float = Field(600, gt=0, le=24 * 3600, description="deadline for one chat completion")
    base_url: Annotated[str, AfterValidator(formats.http_url)] | None = Field(
        None, description="OpenAI base URL; None = through the Kubernetes API server's service proxy")


class TimeoutsSpec(SpecModel):
    """Deadlines of the long waits (real-time seconds)."""

    cluster_create_s: float = Field(30 * 60, gt=0, le=24 * 3600, description="cluster create operation")
    node_pool_create_s: float = Field(60 * 60, gt=0, le=24 * 3600, description="GPU pool create and GPUs ready")
    operator_ready_s: float = Field(10 * 60, gt=0, le=24 * 3600, description="KubeRay operator Available")
    model_load_s: float = Field(60 * 60, gt=0, le=24 * 3600,
                                description="RayService ready (the guide: 20-30 min model download/load)")
    delete_s: float = Field(30 * 60, gt=0, le=24 * 3600, description="each delete operation")
    download_stall_s: float = Field(
        10 * 60, ge=60, le=24 * 3600,
        description="weight download stalled: the Ray workers' disk flat this long with idle GPUs while the "
                    "replica initializes (with serving.stream_weights: the busiest GPU's memory flat this long "
                    "below vLLM's KV-cache share) fails the spin-up (and tears it down) instead of waiting out "
                    "model_load_s; at least 60 (a look every 30 s, pauses between files)")


class LifecyclePolicy(SpecModel):
    """When and how the stack is taken down."""

    teardown_on_failure: bool = Field(True, description="tear down when a spin-up fails, is cancelled or crashes")
    delete_cluster_on_teardown: bool = Field(
        False, description="also delete the cluster (else keep it: ~$0.6/h CPU node, saves minutes on spin-up)")
    lease_s: int = Field(8 * 3600, gt=0, le=30 * 24 * 3600,
                         description="how long a spin-up may live before the janitor takes it down")
    schedule_timezone: Annotated[str, AfterValidator(formats.timezone)] = Field(
        "UTC", description="IANA timezone of spin-up/spin-down schedules")
    keep_for_debugging: bool = Field(False, description="on failure keep everything for inspection (costs!)")
    price_per_node_hour_usd: float = Field(99.58, ge=0, le=10_000, description="GPU node price for cost reports")
    price_source: str = Field(
        "a3-highgpu-8g on-demand in us-east5, Cyclenerd google-cloud-pricing-cost-calculator pricing.yml "
        "(2025-03-06); re-check cloud.google.com/compute/vm-instance-pricing", max_length=1000,
        description="where price_per_node_hour_usd comes from")


class StackSpec(SpecModel):
    """One named serving stack: cluster, GPU pool, operator, serving, validation and lifecycle."""

    name: K8sName = Field("deepseek-r1", description="stack name; resource names and owner labels derive from it")
    cluster: ClusterSpec = Field(description="GKE cluster")
    gpu_pool: GpuPoolSpec = Field(default_factory=GpuPoolSpec, description="GPU node pool")
    operator: OperatorSpec = Field(default_factory=OperatorSpec, description="KubeRay operator")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="RayService / Ray Serve LLM")
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="endpoint check")
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec, description="wait deadlines")
    lifecycle: LifecyclePolicy = Field(default_factory=LifecyclePolicy, description="teardown policy")

    @model_validator(mode="before")
    @classmethod
    def _pool_follows_cluster_zone(cls, data: Any) -> Any:
        """Default the GPU pool's node_locations to the cluster's zone, as the guide does."""
        if not isinstance(data, dict):
            return data
        cluster, pool = data.get("cluster"), data.get("gpu_pool")
        location = cluster.get("location") if isinstance(cluster, dict) else getattr(cluster, "location", None)
        if not isinstance(location, str) or not formats.is_zone(location):
            return data
        if pool is None:
            return {**data, "gpu_pool": {"node_locations": [location]}}
        if isinstance(pool, dict) and "node_locations" not in pool:
            return {**data, "gpu_pool": {**pool, "node_locations": [location]}}
        if isinstance(pool, GpuPoolSpec) and "node_locations" not in pool.model_fields_set:
            return {**data, "gpu_pool": {**pool.model_dump(exclude_unset=True), "node_locations": [location]}}
        return data

    @model_validator(mode="after")
    def _cross_section_rules(self) -> StackSpec:
        from blocks.validation import stack_problems

        if problems := stack_problems(self):
            raise SpecError(problems)
        return self

    @classmethod
    def parse(cls, data: Any) -> StackSpec:
        """Validate a mapping (e.g. loaded YAML) into a spec; raise `SpecError` listing every problem."""
        return cls.model_validate(data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StackSpec:
        """Load a stack from a YAML file; raise `SpecError` for bad YAML or a bad spec."""
        return cls.from_yaml_text(Path(path).read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def from_yaml_text(cls, text: str, *, source: str = "<string>") -> StackSpec:
        """Load a stack from YAML text; raise `SpecError` for bad YAML or a bad spec."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError([f"(file {source}): not valid YAML: {e}"]) from None
        return cls.parse(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Return the spec as YAML (every field, JSON-compatible values); also write it to `path` if given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def updated(self, patch: dict[str, Any]) -> StackSpec:
        """Return a new validated spec with `patch` deep-merged in (e.g. {"serving": {"worker_replicas": 3}})."""
        return type(self).parse(_deep_merge(self.model_dump(mode="json"), patch))


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in _MAP_FIELDS:
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Fields whose value is a user mapping: a patch replaces them instead of merging into them.
_MAP_FIELDS = frozenset({"resource_labels", "runtime_env_vars"})


def non_string_keys(data: Any, path: str = "") -> list[str]:
    """Problems for mapping keys that are not text (YAML `1: x` or `? `), each naming where (pure).

    Checked before pydantic, which would pass such keys as keyword arguments and fail with a TypeError.
    """
    if isinstance(data, dict):
        problems = []
        for key, value in data.items():
            if not isinstance(key, str):
                problems.append(f"{path or '(top level)'}: key {key!r} is not text; field names and "
                                "label/env keys must be strings")
            else:
                problems += non_string_keys(value, f"{path}.{key}" if path else key)
        return problems
    if isinstance(data, list):
        return [p for i, item in enumerate(data) for p in non_string_keys(item, f"{path}[{i}]")]
    return []


def spec_error_from(error: ValidationError, model: type[BaseModel]) -> SpecError:
    """Turn pydantic's errors into one `SpecError`, one problem per error, each naming its field."""
    from blocks.validation import describe_pydantic_error

    problems: list[str] = []
    for item in error.errors(include_url=False):
        nested = (item.get("ctx") or {}).get("error")
        if isinstance(nested, SpecError):
            problems.extend(_prefixed(item["loc"], nested.problems))
        else:
            problems.append(describe_pydantic_error(item, model))
    return SpecError(problems)


def _prefixed(loc: tuple[Any, ...], problems: list[str]) -> list[str]:
    prefix = ".".join(str(p) for p in loc)
    return [f"{prefix}.{p}" if prefix else p for p in problems]

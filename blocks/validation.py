"""Cross-field rules of a stack, and pydantic's errors turned into sentences that name the field.

Single-field formats live in `blocks.formats` (pydantic reports them per field). Here are the rules
that relate fields: the GPU machine and its accelerators, parallelism versus the GPUs the workers get,
worker pods versus nodes, pods versus machine size, zones versus the cluster's region. Each rule
returns problems as strings "dotted.field: bad value ...; accepted ...", and every problem is collected
before anything is raised, so the user sees them all at once.
"""

from __future__ import annotations

import math
import re
import typing
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from blocks import formats
from blocks.machines import GPU_MACHINES, RAY_ACCELERATOR, machine_shape, machines_for
from blocks.quantities import GIB, parse_quantity

if TYPE_CHECKING:
    from blocks.spec import GpuPoolSpec, StackSpec


def gpu_pool_problems(pool: GpuPoolSpec) -> list[str]:
    """Return the GPU pool's problems: machine/accelerator fit, capacity modes, zones."""
    return [*_machine_problems(pool), *_capacity_problems(pool), *_zone_list_problems(pool)]


def _machine_problems(pool: GpuPoolSpec) -> list[str]:
    shape = GPU_MACHINES.get(pool.machine_type)
    if shape is None:
        return [f"machine_type: {pool.machine_type!r} is not a known GPU machine type; accepted: "
                f"{', '.join(sorted(GPU_MACHINES))}"]
    problems = []
    if pool.accelerator_type != shape.accelerator_type:
        other = machines_for(pool.accelerator_type)
        hint = f", or keep it and use machine_type in {other}" if other else ""
        problems.append(f"accelerator_type: {pool.accelerator_type!r} cannot attach to machine_type "
                        f"{pool.machine_type!r}; accepted: {shape.accelerator_type!r}{hint}")
    if pool.accelerator_count != shape.accelerator_count:
        problems.append(f"accelerator_count: {pool.accelerator_count} does not match machine_type "
                        f"{pool.machine_type!r}, which always carries {shape.accelerator_count}; "
                        f"accepted: {shape.accelerator_count}")
    fixed = shape.fixed_local_ssd_count
    if pool.local_ssd_count not in (None, 0) and fixed is not None and pool.local_ssd_count != fixed:
        problems.append(f"local_ssd_count: {pool.local_ssd_count} is not possible on {pool.machine_type!r}, "
                        f"which has {fixed} built-in local SSDs; accepted: {fixed}, 0 or null")
    return problems


def _capacity_problems(pool: GpuPoolSpec) -> list[str]:
    from blocks.spec import CapacityMode

    modes = list(pool.capacity_modes)
    problems = []
    if len(set(modes)) != len(modes):
        problems.append(f"capacity_modes: {[m.value for m in modes]} lists a mode twice; "
                        "accepted: each of on-demand, spot, reservation, flex-start, queued at most once")
    if CapacityMode.RESERVATION in modes and not pool.reservation_name:
        problems.append("reservation_name: None, but capacity_modes includes 'reservation'; accepted: the "
                        "name of a specific reservation (e.g. 'my-h100-reservation')")
    if pool.reservation_name and CapacityMode.RESERVATION not in modes:
        problems.append(f"reservation_name: {pool.reservation_name!r} is set but capacity_modes "
                        f"{[m.value for m in modes]} has no 'reservation'; add 'reservation' or unset it")
    dws = {CapacityMode.FLEX_START, CapacityMode.QUEUED}
    if pool.max_run_duration_s is not None and not dws & set(modes):
        problems.append(f"max_run_duration_s: {pool.max_run_duration_s} applies only to flex-start or "
                        "queued capacity; add one of them to capacity_modes or unset it")
    return problems


def _zone_list_problems(pool: GpuPoolSpec) -> list[str]:
    zones = [*pool.node_locations, *pool.fallback_zones]
    if len(set(zones)) != len(zones):
        return [f"fallback_zones: {pool.fallback_zones} repeats a zone or the node_locations zone "
                f"{pool.node_locations}; accepted: distinct zones other than node_locations"]
    return []


def stack_problems(spec: StackSpec) -> list[str]:
    """Return problems that relate sections: region, parallelism, node count, pod fit, deadlines."""
    return [*_region_problems(spec), *_accelerator_problems(spec), *_parallelism_problems(spec),
            *_node_count_problems(spec), *_fit_problems(spec), *_misc_problems(spec)]


def _region_problems(spec: StackSpec) -> list[str]:
    region = formats.region_of(spec.cluster.location)
    problems = []
    for field in ("node_locations", "fallback_zones"):
        outside = [z for z in getattr(spec.gpu_pool, field) if formats.region_of(z) != region]
        if outside:
            problems.append(f"gpu_pool.{field}: {outside} are outside the cluster's region {region!r} "
                            f"(cluster.location {spec.cluster.location!r}); accepted: zones like "
                            f"'{region}-a'")
    return problems


def _accelerator_problems(spec: StackSpec) -> list[str]:
    expected = RAY_ACCELERATOR.get(spec.gpu_pool.accelerator_type)
    if expected is None or spec.serving.accelerator_type == expected:
        return []
    return [f"serving.accelerator_type: {spec.serving.accelerator_type!r} does not match gpu_pool."
            f"accelerator_type {spec.gpu_pool.accelerator_type!r}; accepted: {expected!r}"]


def _parallelism_problems(spec: StackSpec) -> list[str]:
    s = spec.serving
    problems = []
    if s.min_replicas > s.max_replicas:
        problems.append(f"serving.min_replicas: {s.min_replicas} exceeds serving.max_replicas "
                        f"{s.max_replicas}; accepted: at most {s.max_replicas}")
    needed = s.tensor_parallel_size * s.pipeline_parallel_size * s.max_replicas
    have = s.worker_replicas * s.worker_gpus
    if needed != have:
        replicas = f" x max_replicas {s.max_replicas}" if s.max_replicas != 1 else ""
        problems.append(
            f"serving.tensor_parallel_size x serving.pipeline_parallel_size: {s.tensor_parallel_size} x "
            f"{s.pipeline_parallel_size}{replicas} = {needed} GPUs, but the workers get "
            f"serving.worker_replicas x serving.worker_gpus = {s.worker_replicas} x {s.worker_gpus} = "
            f"{have}; accepted: equal totals (the guide: 8 x 2 = 2 workers x 8 GPUs)")
    if s.worker_gpus > spec.gpu_pool.accelerator_count:
        problems.append(f"serving.worker_gpus: {s.worker_gpus} is more than a node has "
                        f"(gpu_pool.accelerator_count {spec.gpu_pool.accelerator_count}); accepted: at "
                        f"most {spec.gpu_pool.accelerator_count}")
    return problems


def _node_count_problems(spec: StackSpec) -> list[str]:
    s, pool = spec.serving, spec.gpu_pool
    if s.worker_gpus > pool.accelerator_count:
        return []  # reported by _parallelism_problems
    per_node = pool.accelerator_count // s.worker_gpus
    nodes = math.ceil(s.worker_replicas / per_node)
    if nodes == pool.node_count:
        return []
    why = "idle nodes are billed" if pool.node_count > nodes else "workers would stay Pending"
    return [f"gpu_pool.node_count: {pool.node_count}, but serving.worker_replicas {s.worker_replicas} "
            f"worker(s) of {s.worker_gpus} GPUs fit on {nodes} node(s) of {pool.accelerator_count} GPUs "
            f"({why}); accepted: {nodes}, or change serving.worker_replicas"]


def _fit_problems(spec: StackSpec) -> list[str]:
    s, pool = spec.serving, spec.gpu_pool
    problems = []
    gpu_shape = GPU_MACHINES.get(pool.machine_type)
    if gpu_shape is not None:
        per_node = max(1, math.ceil(s.worker_replicas / pool.node_count))
        problems += _pod_fit("serving.worker_resources", s.worker_resources, per_node,
                             pool.machine_type, gpu_shape.vcpus, gpu_shape.memory_gib)
    cpu_shape = machine_shape(spec.cluster.machine_type)
    if cpu_shape is not None:
        problems += _pod_fit("serving.head_resources", s.head_resources, 1,
                             spec.cluster.machine_type, cpu_shape.vcpus, cpu_shape.memory_gib)
    return problems


def _pod_fit(field: str, res: Any, pods: int, machine: str, vcpus: int, memory_gib: float) -> list[str]:
    problems = []
    cpu, memory = parse_quantity(res.cpu) * pods, parse_quantity(res.memory) * pods
    many = f" x {pods} pods per node" if pods > 1 else ""
    if cpu > vcpus:
        problems.append(f"{field}.cpu: {res.cpu!r}{many} does not fit machine_type {machine!r} "
                        f"({vcpus} vCPU); accepted: at most {vcpus // pods} (less the node's system reserve)")
    if memory > memory_gib * GIB:
        problems.append(f"{field}.memory: {res.memory!r}{many} does not fit machine_type {machine!r} "
                        f"({memory_gib:g} GiB); accepted: at most {int(memory_gib // pods)}Gi (less the "
                        "node's system reserve)")
    return problems


def _misc_problems(spec: StackSpec) -> list[str]:
    problems = []
    if spec.validation.max_tokens >= spec.serving.max_model_len:
        problems.append(f"validation.max_tokens: {spec.validation.max_tokens} leaves no room for the "
                        f"prompt in serving.max_model_len {spec.serving.max_model_len}; accepted: less "
                        f"than {spec.serving.max_model_len}")
    if spec.serving.stream_weights and not spec.serving.model_source.startswith("gs://"):
        problems.append(f"serving.stream_weights: true streams the weights out of a bucket, but "
                        f"serving.model_source {spec.serving.model_source!r} is not one; accepted: a "
                        f"gs://BUCKET/PATH model_source (see stage_weights), or stream_weights false")
    spin_up_s = spec.timeouts.node_pool_create_s + spec.timeouts.model_load_s
    if spec.lifecycle.lease_s <= spin_up_s:
        problems.append(f"lifecycle.lease_s: {spec.lifecycle.lease_s} is shorter than a spin-up may take "
                        f"(timeouts.node_pool_create_s + timeouts.model_load_s = {spin_up_s:g}); the janitor "
                        f"would take the stack down mid-spin-up; accepted: more than {spin_up_s:g}")
    return problems


# ---- booleans are no numbers ------------------------------------------------------------------------

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def boolean_number_problem(field: FieldInfo, value: bool) -> str | None:
    """Return why `value` (a boolean) cannot fill the int/float `field`, or None if it is no number field."""
    args = typing.get_args(field.annotation) or (field.annotation,)
    numbers = [a for a in args if a in (int, float)]
    if not numbers:
        return None
    what = "a whole number" if numbers == [int] else "a number"
    bounds = [f"{sign} {_plain(getattr(m, attr))}" for m in field.metadata for attr, sign in _BOUNDS
              if hasattr(m, attr)]
    accepted = what + (f" ({', '.join(bounds)})" if bounds else "") + (" or null" if type(None) in args else "")
    return f"{str(value).lower()} is a boolean, not {what}; accepted: {accepted}"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


# ---- pydantic errors as sentences ------------------------------------------------------------------

_VALUE_ERROR_PREFIX = re.compile(r"^(Value|Assertion) error, ")


def describe_pydantic_error(item: dict[str, Any], model: type[BaseModel]) -> str:
    """Describe one pydantic error: "dotted.field: what is wrong (got value); what is accepted"."""
    path = dotted(item["loc"]) or model.__name__
    kind, msg = item["type"], _VALUE_ERROR_PREFIX.sub("", item["msg"])
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "extra_forbidden":
        parent = _model_at(model, item["loc"][:-1])
        known = ", ".join(parent.model_fields) if parent else "see the spec's fields"
        return f"{path}: unknown field (got {_short(item.get('input'))}); accepted fields here: {known}"
    if kind == "value_error":
        return f"{path}: {msg}"
    return f"{path}: {msg} (got {_short(item.get('input'))})"


def dotted(loc: tuple[Any, ...]) -> str:
    """Render a pydantic location as 'gpu_pool.capacity_modes[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += "[key]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

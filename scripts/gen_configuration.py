"""Generate docs/configuration.md from the stack's pydantic schema: `python scripts/gen_configuration.py`.

Every field of `blocks.spec.StackSpec` and its nested sections gets a row: YAML path, type (with its
format rule and bounds), default, unit and description, all read from the models themselves, so the
page cannot say something the code does not. `--check` exits 1 when the committed file differs from
what the code would generate (tests/unit/test_docs_configuration.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from anywhere: the project root holds `blocks`
    sys.path.insert(0, str(ROOT))

from blocks.machines import GPU_MACHINES, RAY_ACCELERATOR  # noqa: E402
from blocks.spec import StackSpec  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
DEFAULT_CHARS = 48            # longer defaults are cut in the tables; the full YAML is at the end
EXAMPLE_PROJECT = "my-gcp-project"

# Units that the field name's suffix implies.
SUFFIX_UNITS = (("_epoch_s", "Unix seconds"), ("_hour_usd", "USD per node-hour"), ("_s", "seconds"),
                ("_usd", "USD"))
# Units of fields whose name carries none (the description says what the number counts).
NAMED_UNITS = {
    "node_count": "nodes", "accelerator_count": "GPUs per node", "worker_gpus": "GPUs per pod",
    "worker_replicas": "pods", "min_replicas": "replicas", "max_replicas": "replicas",
    "tensor_parallel_size": "GPUs", "pipeline_parallel_size": "stages", "gpu_memory_utilization": "fraction 0-1",
    "max_num_seqs": "sequences", "max_model_len": "tokens", "max_tokens": "tokens", "local_ssd_count": "disks",
    "temperature": "-", "cpu": "CPU cores (Kubernetes quantity)", "memory": "bytes (Kubernetes quantity)",
    "ephemeral_storage": "bytes (Kubernetes quantity)",
}
# Short names of the format checks in blocks/formats.py (others show their docstring's summary).
FORMAT_NAMES = {
    "gke_name": "GKE name", "k8s_name": "Kubernetes name, at most 40 characters",
    "k8s_namespace": "Kubernetes namespace", "project_id": "GCP project id", "zone": "zone, e.g. us-east5-a",
    "zone_or_region": "zone or region", "labels": "GCE labels; owner label keys are reserved",
    "env_vars": "environment variable names", "regex": "Python regular expression", "not_blank": "not blank",
    "timezone": "IANA timezone", "http_url": "http(s) URL with scheme", "_quantity": "Kubernetes quantity",
}
TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
# Timeouts are deadlines in the world being driven: against the sandbox, simulated seconds.
SECTION_NOTES = {
    "timeouts": "Seconds of the world being driven: real seconds on GCP, simulated seconds against the "
                "sandbox (whose clock runs scaled).",
}


def _unit(name: str) -> str:
    for suffix, unit in SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return NAMED_UNITS.get(name, "")


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _constraints(metadata: list[Any]) -> list[str]:
    """Human text for the bounds, lengths, patterns and format checks pydantic attaches to a type."""
    words = {"gt": "> {}", "ge": ">= {}", "lt": "< {}", "le": "<= {}", "min_length": "min length {}",
             "max_length": "max length {}", "pattern": "pattern `{}`"}
    out = []
    for item in metadata:
        func = getattr(item, "func", None)
        if func is not None and type(item).__name__ == "AfterValidator":
            summary = (func.__doc__ or func.__name__).strip().splitlines()[0].rstrip(".")
            out.append(FORMAT_NAMES.get(func.__name__, summary.removeprefix("Check ")))
            continue
        for attr, template in words.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(template.format(value))
    return out


def type_text(annotation: Any) -> tuple[str, list[str]]:
    """Return a readable type for `annotation` and the constraints nested in it (Annotated metadata)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        inner, notes = type_text(args[0])
        return inner, notes + _constraints(list(args[1:]))
    if origin in (typing.Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        text = " or ".join(p[0] for p in parts) + (" or null" if type(None) in args else "")
        return text, [n for p in parts for n in p[1]]
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args), []
    if origin is list:
        inner, notes = type_text(args[0])
        return f"list of {inner}", notes
    if origin is dict:
        return f"map of {type_text(args[0])[0]} to {type_text(args[1])[0]}", []
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation), []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section", []
    name = getattr(annotation, "__name__", str(annotation))
    return TYPE_NAMES.get(name, name), []


def default_value(field: FieldInfo) -> Any:
    """The field's default as plain JSON data, or PydanticUndefined when the field is required."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return PydanticUndefined
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [v.value if isinstance(v, enum.Enum) else v for v in value]
    return value


def default_text(field: FieldInfo, inherited: Any = PydanticUndefined) -> str:
    value = default_value(field) if inherited is PydanticUndefined else inherited
    if value is PydanticUndefined:
        return "**required**"
    if _model_in(field.annotation) and isinstance(value, dict) and len(json.dumps(value)) > DEFAULT_CHARS:
        return "its fields' defaults"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > DEFAULT_CHARS:
        text = text[:DEFAULT_CHARS - 1] + "…"
    return f"`{text}`"


def sections(model: type[BaseModel], path: str = "",
             defaults: dict[str, Any] | None = None) -> list[tuple[str, type[BaseModel], dict[str, Any]]]:
    """Every (YAML path, model, defaults) under `model`, depth first, the root first as ''.

    `defaults` are the values a section takes when the stack leaves it out: the enclosing field's
    default (e.g. `serving.head_resources` defaults to cpu "2", memory "32Gi" though ResourcesSpec
    itself requires both).
    """
    defaults = defaults or {}
    found = [(path, model, defaults)]
    for name, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None:
            inherited = defaults.get(name, default_value(field))
            found += sections(nested, f"{path}.{name}" if path else name,
                              inherited if isinstance(inherited, dict) else None)
    return found


def _model_in(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def field_row(path: str, name: str, field: FieldInfo, defaults: dict[str, Any]) -> str:
    kind, notes = type_text(field.annotation)
    notes = notes + _constraints(field.metadata)
    full = f"{path}.{name}" if path else name
    link = f" ([below](#{full.replace('.', '')}))" if _model_in(field.annotation) else ""
    kind_cell = kind + (f" ({'; '.join(notes)})" if notes else "")
    cells = [f"`{full}`", kind_cell, default_text(field, defaults.get(name, PydanticUndefined)), _unit(name) or "-",
             (field.description or "") + link]
    return "| " + " | ".join(_escape(c) for c in cells) + " |"


def section_markdown(path: str, model: type[BaseModel], defaults: dict[str, Any]) -> str:
    title = f"`{path}`" if path else "The stack (top level)"
    doc = (model.__doc__ or "").strip().splitlines()[0]
    lines = [f"## {title}", "", f"{doc} (`blocks.spec.{model.__name__}`)", ""]
    if path in SECTION_NOTES:
        lines += [SECTION_NOTES[path], ""]
    lines += ["| field | type | default | unit | description |", "|---|---|---|---|---|"]
    lines += [field_row(path, name, field, defaults) for name, field in model.model_fields.items()]
    return "\n".join(lines) + "\n"


def machines_markdown() -> str:
    """The GPU machine types the validator accepts, from blocks/machines.py."""
    lines = ["## Accepted GPU machine types", "",
             "`gpu_pool.machine_type` must be one of these (`blocks/machines.py`); `accelerator_type` and "
             "`accelerator_count` must match it, and `serving.accelerator_type` must be the Ray name.", "",
             "| machine_type | accelerator_type | GPUs | vCPU | memory (GiB) | built-in local SSDs | Ray accelerator |",
             "|---|---|---|---|---|---|---|"]
    for name, s in GPU_MACHINES.items():
        lines.append(f"| `{name}` | `{s.accelerator_type}` | {s.accelerator_count} | {s.vcpus} | {s.memory_gib:g} "
                     f"| {s.fixed_local_ssd_count if s.fixed_local_ssd_count is not None else '-'} | "
                     f"`{RAY_ACCELERATOR.get(s.accelerator_type, '?')}` |")
    return "\n".join(lines) + "\n"


HEADER = """\
<!-- GENERATED by `python scripts/gen_configuration.py` from blocks/spec.py: edit the models, then rerun.
     tests/unit/test_docs_configuration.py fails when this file is stale. -->
# Stack configuration reference

A stack is one YAML file (or the `spec` of a saved `GKE LLM Serving Stack` Prefect Block). Every field
below is optional except `cluster.project`; a field you leave out takes the default shown, and the
defaults reproduce the Ray guide (2 x `a3-highgpu-8g`, DeepSeek-R1, TP 8 x PP 2, in `us-east5-a`).
Unknown fields are errors. `python -m blocks check FILE` validates a file and lists every problem,
each naming its dotted field, the value it got and what would be accepted; `python -m blocks render FILE`
prints the RayService manifest and GKE request bodies the stack produces.

```sh sandbox-safe
python -m blocks check examples/deepseek-r1.yaml
python scripts/gen_configuration.py --check
```

Types: *GKE name* is 1-40 lowercase letters, digits or hyphens starting with a letter; a *Kubernetes
quantity* is a string such as `"24"`, `"500m"` or `"500Gi"`. Sections: """

RULES = """\
## Rules across fields

Besides each field's own type and bounds, a stack is rejected (before any cloud call) when
(`blocks/validation.py`):

- `gpu_pool.machine_type` is not in the table above, or `accelerator_type` / `accelerator_count` /
  `local_ssd_count` do not fit it;
- `gpu_pool.capacity_modes` repeats a mode; `reservation` is listed without `reservation_name` (or the
  name is set without the mode); `max_run_duration_s` is set without `flex-start` or `queued`;
- `gpu_pool.node_locations` or `fallback_zones` repeat a zone or lie outside the cluster's region;
- `serving.accelerator_type` is not the Ray name of `gpu_pool.accelerator_type`;
- `tensor_parallel_size x pipeline_parallel_size x max_replicas` differs from
  `worker_replicas x worker_gpus`, `worker_gpus` exceeds a node's GPUs, or `min_replicas > max_replicas`;
- `gpu_pool.node_count` differs from the nodes the workers need (idle nodes bill; too few leave pods Pending);
- `serving.worker_resources` or `head_resources` do not fit the GPU or CPU machine type;
- `validation.max_tokens` is not below `serving.max_model_len`;
- `lifecycle.lease_s` is not longer than `timeouts.node_pool_create_s + timeouts.model_load_s` (the
  janitor would reclaim a stack mid-spin-up).
"""


def full_defaults_yaml() -> str:
    spec = StackSpec(cluster={"project": EXAMPLE_PROJECT})
    return ("## Every default at once\n\nThe stack `{\"cluster\": {\"project\": \"" + EXAMPLE_PROJECT +
            "\"}}` expands to:\n\n```yaml\n" + spec.to_yaml() + "```\n")


def render() -> str:
    """Return the whole of docs/configuration.md."""
    found = sections(StackSpec)
    index = ", ".join(f"[`{p}`](#{p.replace('.', '')})" for p, _, _ in found if p)
    parts = [HEADER + index + ".\n"]
    parts += [section_markdown(path, model, defaults) for path, model, defaults in found]
    parts += [machines_markdown(), RULES, full_defaults_yaml()]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gen_configuration.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `python scripts/gen_configuration.py`", file=sys.stderr)
            return 1
        print(f"{args.output}: up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

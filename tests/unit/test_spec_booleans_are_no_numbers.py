"""`true`/`false` are refused for every number field of the stack spec (pydantic's lax mode reads
`gpu_pool.node_count: true` as 1), with an error naming the field, the value and what is accepted;
numbers, numeric text and whole floats stay accepted as before, and boolean fields take booleans.

The fields are found by walking the spec's models, so a number field added later is covered too.
"""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from blocks.errors import SpecError
from blocks.spec import StackSpec

BASE = {"cluster": {"project": "my-project"}}


def number_fields(model: type[BaseModel] = StackSpec, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Every (path, 'int' | 'float') of a number field, nested sections included."""
    found = []
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += number_fields(arg, (*path, name))
            elif arg in (int, float):
                found.append(((*path, name), arg.__name__))
    return found


def spec_with(path: tuple[str, ...], value) -> dict:
    data = {"cluster": dict(BASE["cluster"])}
    section = data
    for key in path[:-1]:
        section = section.setdefault(key, {})
    section[path[-1]] = value
    return data


NUMBER_FIELDS = number_fields()


def test_the_walk_finds_the_number_fields_of_every_section():
    names = {".".join(p) for p, _ in NUMBER_FIELDS}
    assert {"gpu_pool.node_count", "cluster.node_count", "serving.gpu_memory_utilization", "validation.temperature",
            "timeouts.download_stall_s", "lifecycle.lease_s", "gpu_pool.local_ssd_count"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("path", "kind"), NUMBER_FIELDS, ids=[".".join(p) for p, _ in NUMBER_FIELDS])
def test_a_boolean_for_a_number_field_is_refused_naming_field_value_and_what_is_accepted(path, kind, value):
    with pytest.raises(SpecError) as error:
        StackSpec.parse(spec_with(path, value))
    dotted, word = ".".join(path), "a whole number" if kind == "int" else "a number"
    expected = f"{dotted}: {str(value).lower()} is a boolean, not {word}; accepted: {word}"
    assert any(p.startswith(expected) for p in error.value.problems), error.value.problems


def test_the_error_gives_the_fields_bounds_and_says_when_null_is_accepted():
    with pytest.raises(SpecError) as error:
        StackSpec.parse({**BASE, "gpu_pool": {"node_count": True, "local_ssd_count": False},
                         "serving": {"max_model_len": True}})
    assert error.value.problems == [
        "gpu_pool.node_count: true is a boolean, not a whole number; accepted: a whole number (> 0, <= 1000)",
        "gpu_pool.local_ssd_count: false is a boolean, not a whole number; accepted: a whole number (>= 0, "
        "<= 32) or null",
        "serving.max_model_len: true is a boolean, not a whole number; accepted: a whole number (> 0, "
        "<= 10000000)"]


def test_yaml_true_for_a_count_is_refused_before_any_cross_field_rule_misreads_it_as_one():
    with pytest.raises(SpecError) as error:
        StackSpec.from_yaml_text("cluster: {project: my-project}\ngpu_pool: {node_count: true}\n")
    assert error.value.problems[0].startswith("gpu_pool.node_count: true is a boolean")
    assert not any("fit on" in p for p in error.value.problems)


@pytest.mark.parametrize(("patch", "section", "field", "expected"), [
    ({"gpu_pool": {"node_count": 2}}, "gpu_pool", "node_count", 2),
    ({"gpu_pool": {"node_count": "2"}}, "gpu_pool", "node_count", 2),          # numeric text, as before
    ({"gpu_pool": {"node_count": 2.0}}, "gpu_pool", "node_count", 2),          # a whole float, as before
    ({"validation": {"temperature": "0.5"}}, "validation", "temperature", 0.5),
    ({"validation": {"temperature": 0}}, "validation", "temperature", 0.0),
    ({"timeouts": {"download_stall_s": 900}}, "timeouts", "download_stall_s", 900.0),
    ({"gpu_pool": {"gvnic": True}}, "gpu_pool", "gvnic", True),                # booleans where booleans belong
    ({"lifecycle": {"keep_for_debugging": False}}, "lifecycle", "keep_for_debugging", False),
])
def test_numbers_numeric_text_and_boolean_fields_keep_working(patch, section, field, expected):
    spec = StackSpec.parse({**BASE, **patch})
    value = getattr(getattr(spec, section), field)
    assert value == expected and type(value) is type(expected)


def test_the_download_stall_limit_is_validated_like_the_other_timeouts():
    with pytest.raises(SpecError) as error:
        StackSpec.parse({**BASE, "timeouts": {"download_stall_s": 30}})
    assert error.value.problems == ["timeouts.download_stall_s: Input should be greater than or equal to 60 (got 30)"]
    assert StackSpec.parse(BASE).timeouts.download_stall_s == 600

"""docs/configuration.md is generated from the stack schema and must match the code that is committed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from blocks.spec import StackSpec

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_configuration", ROOT / "scripts" / "gen_configuration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _every_field_path(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        nested = next((t for t in (field.annotation,) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if nested is not None:
            paths += _every_field_path(nested, f"{path}.")
    return paths


def test_the_committed_configuration_doc_is_what_the_schema_generates(gen):
    assert DOC.read_text(encoding="utf-8") == gen.render(), (
        "docs/configuration.md is stale: run `python scripts/gen_configuration.py` and commit the result")


def test_every_stack_field_has_a_row_with_type_default_unit_and_description(gen):
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_.]+)` \|.*\|$", gen.render(), re.M)}
    for path in _every_field_path(StackSpec):
        assert path in rows, f"{path} has no row in docs/configuration.md"
        cells = [c.strip() for c in rows[path].strip("|").split(" | ")]
        assert len(cells) == 5 and all(cells), f"{path}: a cell is empty: {cells}"


def test_defaults_in_the_doc_are_the_models_defaults(gen):
    text = gen.render()
    assert '| `serving.head_resources.memory` | string (Kubernetes quantity) | `"32Gi"` |' in text
    assert re.search(r"\| `timeouts.model_load_s` \| number \(> 0; <= 86400\) \| `3600.0` \| seconds \|", text)
    assert "| `cluster.project` | string (GCP project id) | **required** |" in text
    # The full-defaults YAML is a valid stack that round-trips to the defaults.
    yaml_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert StackSpec.from_yaml_text(yaml_block) == StackSpec(cluster={"project": gen.EXAMPLE_PROJECT})


def test_the_check_mode_fails_on_a_stale_file_and_passes_on_a_fresh_one(gen, tmp_path, capsys):
    target = tmp_path / "configuration.md"
    assert gen.main(["--output", str(target)]) == 0
    assert gen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text().replace("`1800.0`", "`1700.0`", 1))
    assert gen.main(["--check", "--output", str(target)]) == 1
    assert "is stale" in capsys.readouterr().err

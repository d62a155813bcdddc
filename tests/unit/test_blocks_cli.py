"""`python -m blocks check|render STACK_FILE`, run as a user would: a subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.cloud.container_v1 import types as T

from blocks.__main__ import main
from blocks.render_rayservice import ray_service_manifest
from blocks.spec import StackSpec

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "examples" / "deepseek-r1.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blocks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_check_accepts_the_examples():
    result = run("check", str(GUIDE))
    assert result.returncode == 0, result.stderr
    assert "ok: stack 'deepseek-r1'" in result.stdout


def test_check_prints_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "name": "Bad Name",
        "cluster": {"project": "my-gcp-project", "name": "Cluster_1"},
        "validation": {"prompt": "", "expected_pattern": "("},
        "gpu_pool": {"node_count": 0},
    }))
    result = run("check", str(bad))
    assert result.returncode == 1
    for field in ("name:", "cluster.name:", "validation.prompt:", "validation.expected_pattern:",
                  "gpu_pool.node_count:"):
        assert f"  - {field}" in result.stderr, result.stderr
    assert "5 problem(s)" in result.stderr
    assert result.stdout == ""


# The remaining error paths run in-process (same `main`) to keep the suite fast.

def test_check_reports_an_unreadable_file(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(tmp_path / "missing.yaml")], out=out, err=err) == 1
    assert "cannot read stack file" in err.getvalue()


@pytest.mark.parametrize("argv", [["explode", str(GUIDE)], ["check"], ["render", str(GUIDE), "--capacity-mode", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


@pytest.fixture(scope="module")
def rendered_text() -> str:
    result = run("render", str(GUIDE))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(rendered_text) -> list[dict]:
    return list(yaml.safe_load_all(rendered_text))


def test_render_prints_the_three_documents_with_their_kinds(rendered):
    assert [doc["kind"] for doc in rendered] == ["RayService", "CreateClusterRequest", "CreateNodePoolRequest"]


def test_rendered_ray_service_equals_the_renderer(rendered):
    assert rendered[0] == ray_service_manifest(StackSpec.from_yaml(GUIDE))


def test_rendered_gke_requests_are_rest_json_that_strict_parses(rendered):
    cluster_doc, pool_doc = (dict(d) for d in rendered[1:])
    assert "nodePools" in cluster_doc["cluster"] and "initialNodeCount" in pool_doc["nodePool"]
    for doc, request_type in ((cluster_doc, T.CreateClusterRequest), (pool_doc, T.CreateNodePoolRequest)):
        doc.pop("kind")
        request = request_type.from_json(json.dumps(doc), ignore_unknown_fields=False)
        assert request.parent.startswith("projects/my-gcp-project/locations/us-east5-a")


def test_render_notes_how_host_maintenance_is_sent(rendered_text):
    assert "# POST /v1beta1/projects/my-gcp-project/locations/us-east5-a/clusters/kuberay-gpu-cluster/nodePools" \
        in rendered_text
    assert "maintenanceInterval: PERIODIC" in rendered_text


def test_render_with_options_and_an_hf_token_never_prints_a_token(tmp_path):
    stack = tmp_path / "stack.yaml"
    StackSpec.from_yaml(GUIDE).updated({"gpu_pool": {"capacity_modes": ["on-demand", "spot"],
                                                     "fallback_zones": ["us-east5-b"]}}).to_yaml(stack)
    result = run("render", str(stack), "--zone", "us-east5-b", "--capacity-mode", "spot", "--with-hf-token")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs[2]["nodePool"]["locations"] == ["us-east5-b"] and docs[2]["nodePool"]["config"]["spot"] is True
    worker = docs[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"


def test_render_rejects_a_zone_outside_the_spec():
    out, err = io.StringIO(), io.StringIO()
    assert main(["render", str(GUIDE), "--zone", "europe-west4-a"], out=out, err=err) == 1
    assert "error: zone: 'europe-west4-a'" in err.getvalue() and out.getvalue() == ""

"""RayService renderer: equal to the upstream sample with defaults, consistent when the shape changes."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from blocks.labels import is_ours
from blocks.render_rayservice import (
    hf_token_secret_manifest,
    ray_service_manifest,
    serve_config,
    streaming_engine_kwargs,
)
from blocks.spec import StackSpec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REL = "kuberay/v1.7.0/ray-operator/config/samples/ray-service.deepseek.yaml"
SAMPLE_CANDIDATES = [ROOT / "third_party" / SAMPLE_REL, ROOT.parent / "shared" / SAMPLE_REL]
WORKERS = ("spec", "rayClusterConfig", "workerGroupSpecs", 0)


def load_sample() -> dict:
    for path in SAMPLE_CANDIDATES:
        if path.exists():
            return yaml.safe_load(path.read_text())
    raise AssertionError(f"upstream sample not found in {SAMPLE_CANDIDATES}")


def default_spec() -> StackSpec:
    return StackSpec(cluster={"project": "my-gcp-project"})


def at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def differences(a, b, path=()) -> set[tuple]:
    """Paths where two JSON-like documents differ (a key only on one side counts as a difference)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                out.add((*path, key))
            else:
                out |= differences(a[key], b[key], (*path, key))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(*(differences(x, y, (*path, i)) for i, (x, y) in enumerate(zip(a, b, strict=True))))
    return set() if a == b else {path}


def with_parsed_serve_config(manifest: dict) -> dict:
    doc = copy.deepcopy(manifest)
    doc["spec"]["serveConfigV2"] = yaml.safe_load(doc["spec"]["serveConfigV2"])
    return doc


def test_serve_config_equals_the_samples_parsed_yaml():
    sample = load_sample()
    rendered = ray_service_manifest(default_spec())
    assert yaml.safe_load(rendered["spec"]["serveConfigV2"]) == yaml.safe_load(sample["spec"]["serveConfigV2"])
    assert serve_config(default_spec()) == yaml.safe_load(sample["spec"]["serveConfigV2"])


def test_default_manifest_is_the_sample_plus_only_the_documented_additions():
    sample = with_parsed_serve_config(load_sample())
    rendered = with_parsed_serve_config(ray_service_manifest(default_spec()))
    assert differences(sample, rendered) == {
        ("metadata", "namespace"),
        ("metadata", "labels"),
        (*WORKERS, "template", "spec", "nodeSelector"),
        # serving.prefetch_weights (default on): the node cache the prefetch DaemonSet fills
        (*WORKERS, "template", "spec", "volumes"),
        (*WORKERS, "template", "spec", "containers", 0, "volumeMounts"),
    }
    assert rendered["metadata"]["namespace"] == "default"
    assert is_ours(rendered["metadata"]["labels"], "deepseek-r1")
    assert at(rendered, WORKERS)["template"]["spec"]["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}


def test_lease_and_run_id_go_into_owner_labels():
    labels = ray_service_manifest(default_spec(), lease_expiry_epoch_s=1_900_000_000, run_id="abc")["metadata"][
        "labels"]
    assert labels["gke-llm-flows-lease-expiry"] == "1900000000"
    assert labels["gke-llm-flows-run-id"] == "abc"


def test_rendering_is_deterministic_and_json_serializable():
    a, b = ray_service_manifest(default_spec()), ray_service_manifest(default_spec())
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize(("tp", "pp", "workers", "worker_gpus", "nodes"), [
    (8, 3, 3, 8, 3),
    (8, 1, 1, 8, 1),
    (4, 2, 2, 4, 1),
    (4, 4, 4, 4, 2),
])
def test_changing_parallelism_keeps_replicas_and_gpu_limits_consistent(tp, pp, workers, worker_gpus, nodes):
    spec = default_spec().updated({
        "serving": {"tensor_parallel_size": tp, "pipeline_parallel_size": pp, "worker_replicas": workers,
                    "worker_gpus": worker_gpus, "worker_resources": {"cpu": "24", "memory": "400Gi"}},
        "gpu_pool": {"node_count": nodes}})
    manifest = ray_service_manifest(spec)
    group = at(manifest, WORKERS)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == workers
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == str(worker_gpus)
    engine = serve_config(spec)["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    assert (engine["tensor_parallel_size"], engine["pipeline_parallel_size"]) == (tp, pp)
    assert engine["tensor_parallel_size"] * engine["pipeline_parallel_size"] == workers * worker_gpus


def test_changing_model_and_gpu_family_keeps_accelerator_types_consistent():
    spec = default_spec().updated({
        "gpu_pool": {"machine_type": "a3-ultragpu-8g", "accelerator_type": "nvidia-h200-141gb"},
        "serving": {"accelerator_type": "H200", "model_id": "r1-h200", "model_source": "deepseek-ai/DeepSeek-R1-0528",
                    "ray_image": "rayproject/ray-llm:2.53.0-py311-cu128"}})
    manifest = ray_service_manifest(spec)
    llm = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert llm["accelerator_type"] == "H200"
    assert llm["model_loading_config"] == {"model_id": "r1-h200", "model_source": "deepseek-ai/DeepSeek-R1-0528"}
    pod = at(manifest, WORKERS)["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h200-141gb"}
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == pod["containers"][0]["image"] == "rayproject/ray-llm:2.53.0-py311-cu128"


def test_hf_token_is_an_env_var_from_a_secret_on_head_and_workers():
    spec = default_spec()
    manifest = ray_service_manifest(spec, hf_token=True)
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = at(manifest, WORKERS)["template"]["spec"]["containers"][0]
    expected = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "hf_token"}}}]
    assert head["env"] == worker["env"] == expected
    assert "env" not in at(ray_service_manifest(spec), WORKERS)["template"]["spec"]["containers"][0]


def test_hf_token_secret_carries_the_token_and_the_manifest_never_does():
    token = "hf_verysecretvalue123"
    secret = hf_token_secret_manifest(default_spec(), SecretStr(token), run_id="r1")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "hf-token"
    assert base64.b64decode(secret["data"]["hf_token"]).decode() == token
    assert is_ours(secret["metadata"]["labels"], "deepseek-r1")
    assert token not in json.dumps(ray_service_manifest(default_spec(), hf_token=True))


def test_empty_hf_token_is_rejected():
    with pytest.raises(ValueError, match="hf token: empty"):
        hf_token_secret_manifest(default_spec(), "  ")


def test_optional_ephemeral_storage_and_upgrade_strategy_are_rendered_when_set():
    spec = default_spec().updated({"serving": {
        "worker_resources": {"cpu": "24", "memory": "500Gi", "ephemeral_storage": "1200Gi"},
        "upgrade_strategy": "NewCluster"}})
    manifest = ray_service_manifest(spec)
    resources = at(manifest, WORKERS)["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["ephemeral-storage"] == resources["requests"]["ephemeral-storage"] == "1200Gi"
    assert manifest["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_no_runtime_env_vars_drops_runtime_env():
    spec = default_spec().updated({"serving": {"runtime_env_vars": {}}})
    llm = serve_config(spec)["applications"][0]["args"]["llm_configs"][0]
    assert "runtime_env" not in llm


def rayservice_schema() -> dict:
    rel = "kuberay/v1.7.0/ray-operator/config/crd/bases/ray.io_rayservices.yaml"
    for path in (ROOT / "third_party" / rel, ROOT.parent / "shared" / rel):
        if path.exists():
            # 1 MB of YAML: the C loader takes a fraction of the pure-Python one's seconds
            crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    raise AssertionError(f"RayService CRD {rel} not found")


def test_rendered_manifests_validate_against_the_kuberay_crd_schema():
    import jsonschema

    schema = rayservice_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)  # skip re-checking the 1 MB schema
    full = default_spec().updated({"serving": {
        "worker_resources": {"cpu": "24", "memory": "500Gi", "ephemeral_storage": "1200Gi"},
        "upgrade_strategy": "NewClusterWithIncrementalUpgrade"}})
    for manifest in (ray_service_manifest(default_spec()), ray_service_manifest(full, hf_token=True, run_id="x")):
        validator.validate(manifest)
    broken = ray_service_manifest(default_spec())
    at(broken, WORKERS)["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_streamed_weights_turn_on_vllms_streamer_and_change_only_the_serve_config():
    bucket = "gs://team-weights/deepseek-ai/DeepSeek-R1"
    downloaded = default_spec().updated({"serving": {"model_source": bucket}})
    streamed = downloaded.updated({"serving": {"stream_weights": True}})
    engine = serve_config(streamed)["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    before = serve_config(downloaded)["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    assert engine == {**before, "load_format": "runai_streamer", "model_loader_extra_config": {"distributed": True}}
    # Ray Serve LLM skips its download only for a mirror-config model with a streaming load_format.
    loading = serve_config(streamed)["applications"][0]["args"]["llm_configs"][0]["model_loading_config"]
    assert loading["model_source"] == {"bucket_uri": bucket}
    # A Serve-config change only: the Ray cluster's pods are the same, so no new cluster is built.
    assert (ray_service_manifest(streamed)["spec"]["rayClusterConfig"]
            == ray_service_manifest(downloaded)["spec"]["rayClusterConfig"])
    # One GPU per stage: nothing to split the reads among.
    assert streaming_engine_kwargs(1) == {"load_format": "runai_streamer"}

"""The weights-prefetch DaemonSet: shape, when it applies, and the script it runs.

The script is run for real with a stand-in `huggingface_hub` module first on its path: the download
itself needs the network; everything around it (the marker the readiness probe looks for, skipping a
completed copy, and, when the tests run as root as the container does, handing the cache to the `ray`
user before downloading) is the script's own logic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from blocks.render_prefetch import (
    PREFETCH_HF_HOME,
    prefetch_applies,
    prefetch_marker,
    weights_prefetch_manifest,
)
from blocks.render_rayservice import NODE_CACHE_PATH, RAY_HF_CACHE, ray_service_manifest
from blocks.spec import StackSpec

SOURCE = "deepseek-ai/DeepSeek-R1"


def spec(**serving) -> StackSpec:
    return StackSpec.parse({"cluster": {"project": "my-project", "location": "us-east5-a"}, "serving": serving})


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def test_the_daemonset_runs_beside_the_driver_install_on_the_gpu_nodes_only():
    ds = weights_prefetch_manifest(spec())
    pod = pod_spec(ds)
    assert (ds["apiVersion"], ds["kind"], ds["metadata"]["name"]) == ("apps/v1", "DaemonSet", "deepseek-r1-prefetch")
    assert ds["metadata"]["labels"]["gke-llm-flows-stack"] == "deepseek-r1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = pod["containers"][0]
    # No GPU request: it must run while nvidia.com/gpu is not yet allocatable.
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["image"] == spec().serving.ray_image
    assert ds["spec"]["selector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]
    assert {"name": "PREFETCH_SOURCE", "value": SOURCE} in container["env"]


def test_the_workers_mount_the_same_node_cache_as_their_hugging_face_cache():
    ds_volume = pod_spec(weights_prefetch_manifest(spec()))["volumes"][0]
    workers = ray_service_manifest(spec())["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert workers["volumes"] == [ds_volume]
    assert ds_volume["hostPath"]["path"] == NODE_CACHE_PATH
    assert workers["containers"][0]["volumeMounts"] == [{"name": ds_volume["name"], "mountPath": RAY_HF_CACHE}]


def test_changing_the_model_leaves_the_worker_template_alone():
    """A model change must stay a Serve-config change: KubeRay rebuilds the Ray cluster for a template change."""
    def workers(s: StackSpec) -> dict:
        return ray_service_manifest(s)["spec"]["rayClusterConfig"]["workerGroupSpecs"]

    assert workers(spec()) == workers(spec(model_source="gs://bucket/models/deepseek-ai/DeepSeek-R1"))
    assert workers(spec()) == workers(spec(model_source="Qwen/Qwen2.5-7B-Instruct"))


def test_prefetch_applies_to_hugging_face_sources_only_and_can_be_turned_off():
    assert prefetch_applies(spec())
    assert not prefetch_applies(spec(model_source="gs://bucket/models/deepseek-ai/DeepSeek-R1"))
    assert not prefetch_applies(spec(prefetch_weights=False))
    workers = ray_service_manifest(spec(prefetch_weights=False))["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert "volumes" not in workers["template"]["spec"]


def test_the_token_secret_is_referenced_never_inlined():
    env = pod_spec(weights_prefetch_manifest(spec(), hf_token=True))["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "hf_token"}}} in env


RAY_UID, RAY_GID = 1000, 100


@pytest.fixture
def workdir(tmp_path):
    """workdir, or as root a world-traversable dir: the script drops to the `ray` user (uid 1000)."""
    if os.getuid() != 0:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="prefetch-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Imports nothing the script has not loaded: as root the script drops to uid 1000 first, which may not
# read this interpreter's standard library (here it lives under /root).
STAND_IN = '''\
import os, pathlib
def list_repo_files(repo_id):
    return os.environ.get("REPO_FILES", "config.json,model.safetensors").split(",")
def snapshot_download(repo_id, **kwargs):
    home = pathlib.Path(os.environ["HF_HOME"])
    with (home / "calls").open("a") as f:
        f.write(repo_id + "\\n")
    (home / "ignored").write_text(",".join(kwargs.get("ignore_patterns") or []))
'''


def run_script(workdir: Path, source: str, repo_files: list[str] | None = None) -> subprocess.Popen:
    container = pod_spec(weights_prefetch_manifest(spec(model_source=source)))["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    (workdir / "stand_in").mkdir(exist_ok=True)
    (workdir / "stand_in" / "huggingface_hub.py").write_text(STAND_IN)
    env = {**os.environ, "PYTHONPATH": str(workdir / "stand_in"), "HF_HOME": str(workdir / "cache"),
           "PREFETCH_SOURCE": source, **({"REPO_FILES": ",".join(repo_files)} if repo_files else {})}
    return subprocess.Popen([sys.executable, "-c", container["command"][2]], env=env, stdout=subprocess.PIPE,
                            text=True)


def marker_on_disk(workdir: Path, source: str) -> Path:
    """The readiness probe's path, mapped from the container's HF_HOME to the test's."""
    return workdir / "cache" / Path(prefetch_marker(source)).relative_to(PREFETCH_HF_HOME)


def wait_and_stop(proc: subprocess.Popen, path: Path) -> None:
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert proc.poll() is None, "the prefetch script exited: a DaemonSet pod must keep running"
            assert time.monotonic() < deadline, f"no marker at {path}"
            time.sleep(0.05)
        time.sleep(0.2)
        assert proc.poll() is None, "the prefetch script exited after the copy: a DaemonSet pod must keep running"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("source", [SOURCE, "Qwen/Qwen2.5-7B-Instruct"])
def test_the_script_writes_the_marker_the_probe_looks_for_and_a_rerun_skips_the_copy(workdir, source):
    marker = marker_on_disk(workdir, source)
    wait_and_stop(run_script(workdir, source), marker)
    assert (workdir / "cache" / "calls").read_text().splitlines() == [source]
    wait_and_stop(run_script(workdir, source), marker)    # the pod restarted on the same node
    assert (workdir / "cache" / "calls").read_text().splitlines() == [source], "a complete copy was fetched again"
    if os.getuid() == 0:   # as in the container: every file of the cache belongs to the workers' user
        for path in (workdir / "cache", workdir / "cache" / "hub", marker, workdir / "cache" / "calls"):
            assert (path.stat().st_uid, path.stat().st_gid) == (RAY_UID, RAY_GID), path


@pytest.mark.parametrize(("files", "ignored"), [
    (["config.json", "model-00001-of-00002.safetensors", "pytorch_model.bin", "original/consolidated.00.pth"],
     ["original/*", "*.pth", "*.bin", "*.pt"]),
    (["config.json", "pytorch_model.bin"], ["original/*", "*.pth"]),
])
def test_only_the_weights_vllm_loads_are_fetched(workdir, files, ignored):
    wait_and_stop(run_script(workdir, SOURCE, files), marker_on_disk(workdir, SOURCE))
    assert (workdir / "cache" / "ignored").read_text().split(",") == ignored


def test_another_model_has_another_marker(workdir):
    assert prefetch_marker(SOURCE) != prefetch_marker("Qwen/Qwen2.5-7B-Instruct")
    wait_and_stop(run_script(workdir, SOURCE), marker_on_disk(workdir, SOURCE))
    wait_and_stop(run_script(workdir, "Qwen/Qwen2.5-7B-Instruct"), marker_on_disk(workdir, "Qwen/Qwen2.5-7B-Instruct"))
    assert (workdir / "cache" / "calls").read_text().splitlines() == [SOURCE, "Qwen/Qwen2.5-7B-Instruct"]


def test_the_summary_says_how_the_weights_reached_the_gpu_nodes():
    from flows.summary import weights_line

    assert "prefetched onto 2 of 2 GPU nodes" in weights_line(spec(), {"source": SOURCE, "gpu_nodes": 2,
                                                                       "complete_on": 2})
    bucket = "gs://my-bucket/m/deepseek-ai/DeepSeek-R1"
    assert "downloaded by the Ray workers from the staged copy in GCS, then loaded (set serving.stream_weights" \
        in weights_line(spec(model_source=bucket), None)
    assert "streamed from the staged copy in GCS straight into GPU memory" \
        in weights_line(spec(model_source=bucket, stream_weights=True), None)
    assert "set serving.prefetch_weights" in weights_line(spec(prefetch_weights=False), None)
    assert "no record of the prefetch" in weights_line(spec(), None)

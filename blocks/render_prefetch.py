"""Render the weights-prefetch DaemonSet: the model lands on each GPU node while its GPU driver installs.

Why: on a new GKE GPU node `nvidia.com/gpu` becomes allocatable only after GKE's driver installer has
run (minutes after the node registers), so a Ray worker, which requests GPUs, starts only then and
only then begins its ~700 GB download. A pod that requests no GPU and tolerates the GPU taint can run
on the node from the moment it registers. This DaemonSet puts one such pod on every node of the GPU
pool; it downloads the model into a hostPath on the node (the Local SSD when the pool has one) that the
Ray workers mount as their Hugging Face cache. When a worker starts, the files are there, or partly:
its own download then skips the complete files and waits on the ones in flight (huggingface_hub's
cache and its per-file locks), so a slow or failed prefetch costs nothing over not having one.
Hugging Face sources only (`prefetch_applies`). The workers mount the cache whatever the source, so
that changing the model never changes their pod template (which KubeRay would treat as a new cluster).

Pure: no I/O. The shared volume and the GPU-pool placement come from render_rayservice (the workers' side).
"""

from __future__ import annotations

import hashlib
from typing import Any

from blocks.labels import owner_labels
from blocks.render_rayservice import CACHE_VOLUME, gpu_node_placement, hf_token_env, node_cache_volume
from blocks.spec import StackSpec

PREFETCH_HF_HOME = "/cache/huggingface"
CONTAINER_NAME = "prefetch-weights"

# Runs in the stack's Ray image (huggingface_hub is there: vLLM needs it). As root it first hands the
# cache dirs to the `ray` user (uid 1000, gid 100 in the rayproject images) and drops to it: the workers
# add missing files to the same cache, so every file must be theirs. The marker is written last and the
# readiness probe looks for it, so Ready means complete. A DaemonSet pod must not exit, hence the sleep.
# Only the files vLLM loads: it reads safetensors when a repo has them (else .bin / .pt) and never the
# `original/` checkpoints some repos carry beside them (Llama's are 16 GB and more).
PREFETCH_SCRIPT = """\
import hashlib, os, pathlib, time
source = os.environ["PREFETCH_SOURCE"]
home = pathlib.Path(os.environ["HF_HOME"])
marker = home / "gke-llm-flows" / (hashlib.sha256(source.encode()).hexdigest()[:16] + ".done")
if not marker.exists():
    for folder in (home, home / "hub", marker.parent):
        folder.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            os.chown(folder, 1000, 100)
    if os.getuid() == 0:
        os.setgid(100)
        os.setuid(1000)
    from huggingface_hub import list_repo_files, snapshot_download
    skip = ["original/*", "*.pth"]
    if any(name.endswith(".safetensors") for name in list_repo_files(source)):
        skip += ["*.bin", "*.pt"]
    snapshot_download(source, max_workers=16, ignore_patterns=skip)
    marker.touch()
print("prefetched", source, flush=True)
while True:
    time.sleep(3600)
"""


def prefetch_applies(spec: StackSpec) -> bool:
    """Whether the stack gets a prefetch DaemonSet: `serving.prefetch_weights` and a Hugging Face source.

    Not for a gs:// copy: Ray Serve LLM's cloud downloader rewrites every file of a mirror-config model
    whether it is on disk or not (ray.llm `CloudFileSystem.download_files`), so a prefetched copy would
    be fetched twice for nothing. huggingface_hub, which loads Hugging Face sources, skips complete files.
    """
    return spec.serving.prefetch_weights and not spec.serving.model_source.startswith("gs://")


def prefetch_name(spec: StackSpec) -> str:
    """The DaemonSet's name: one per RayService."""
    return f"{spec.serving.ray_service_name}-prefetch"


def prefetch_marker(source: str) -> str:
    """Path (in the prefetch container) of the file that says `source` is complete on the node."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{PREFETCH_HF_HOME}/gke-llm-flows/{digest}.done"


def weights_prefetch_manifest(spec: StackSpec, *, hf_token: bool = False) -> dict[str, Any]:
    """Return the DaemonSet (apps/v1) that prefetches `serving.model_source` onto every GPU node.

    Owner labels only (no lease or run id): those change every spin-up and would churn nothing useful.
    `hf_token=True` passes the token Secret (see render_rayservice) for gated repositories.
    """
    s = spec.serving
    selector = {"app.kubernetes.io/name": "weights-prefetch", "app.kubernetes.io/instance": s.ray_service_name}
    env = [{"name": "PREFETCH_SOURCE", "value": s.model_source}, {"name": "HF_HOME", "value": PREFETCH_HF_HOME}]
    if hf_token:
        env.append(hf_token_env(spec))
    container = {
        "name": CONTAINER_NAME, "image": s.ray_image, "command": ["python", "-c", PREFETCH_SCRIPT], "env": env,
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": PREFETCH_HF_HOME}],
        "securityContext": {"runAsUser": 0},
        "readinessProbe": {"exec": {"command": ["test", "-f", prefetch_marker(s.model_source)]},
                           "periodSeconds": 10},
        # No limits: the copy may use the idle node's CPU and page cache before the worker arrives;
        # the small requests leave the worker's Guaranteed share untouched.
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}},
    }
    pod_spec = {
        **gpu_node_placement(spec),
        "terminationGracePeriodSeconds": 5,
        "volumes": [node_cache_volume()],
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": prefetch_name(spec), "namespace": s.namespace, "labels": owner_labels(spec.name)},
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            # A new model replaces every node's pod at once: the old model's copy is of no use.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": dict(selector)}, "spec": pod_spec},
        },
    }

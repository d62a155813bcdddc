"""Render the RayService manifest (and the HF token Secret) from a stack spec. Pure: no I/O.

With the default spec the manifest is the upstream KubeRay sample `ray-service.deepseek.yaml` plus
only these additions, each one a safety default:
- `metadata.namespace`: explicit, so an apply never lands in whatever namespace a kubeconfig defaults to;
- `metadata.labels`: our owner labels, so teardown and the janitor can tell the RayService is ours;
- a `cloud.google.com/gke-accelerator` nodeSelector on the GPU workers: in a cluster with more than one
  GPU pool, workers landing on the wrong GPU would fail only after the 20-30 minute model load;
- when an HF token is configured: an `HF_TOKEN` env var from a `secretKeyRef` on head and workers
  (gated models need it on every node that downloads weights); the token itself never appears;
- when configured: ephemeral-storage requests/limits and `upgradeStrategy`;
- with `serving.prefetch_weights` (the default): the workers' Hugging Face cache is the node's hostPath
  that the weights-prefetch DaemonSet fills while the GPU driver installs (blocks/render_prefetch.py);
- with `serving.stream_weights` (a gs:// source only): vLLM's `load_format: runai_streamer`, so the engine
  streams the bucket copy into GPU memory instead of Ray downloading it to disk first.
Everything that depends on parallelism (worker replicas, GPU limits, accelerator type, TP/PP) is derived
from the same spec fields, so changing one keeps the manifest consistent.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml
from pydantic import SecretStr

from blocks.labels import owner_labels
from blocks.spec import ResourcesSpec, StackSpec

RAY_API_VERSION = "ray.io/v1"
GPU_RESOURCE = "nvidia.com/gpu"
HF_TOKEN_ENV = "HF_TOKEN"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# The node's Hugging Face cache that the weights-prefetch DaemonSet fills (blocks/render_prefetch.py),
# under the path GKE mounts the Local SSD at for ephemeral storage (`--ephemeral-storage-local-ssd`);
# without Local SSD the same path is on the boot disk's stateful partition (inference, see docs).
CACHE_VOLUME = "hf-cache"
NODE_CACHE_PATH = "/mnt/stateful_partition/kube-ephemeral-ssd/gke-llm-flows/hf-cache"
RAY_HF_CACHE = "/home/ray/.cache/huggingface"     # the rayproject images' `ray` user's cache
HEAD_PORTS = [
    {"containerPort": 6379, "name": "gcs-server"},
    {"containerPort": 8265, "name": "dashboard"},
    {"containerPort": 10001, "name": "client"},
    {"containerPort": 8000, "name": "serve"},
]


def _model_source(source: str) -> str | dict[str, str]:
    """A bucket copy goes in Ray Serve LLM's mirror-config form, which every Ray Serve LLM release reads
    (GCSMirrorConfig up to the 2.4x docs, CloudMirrorConfig later); a bare gs:// string is not one of the
    documented forms. Hugging Face ids and local paths stay plain strings."""
    return {"bucket_uri": source} if source.startswith("gs://") else source


def streaming_engine_kwargs(tensor_parallel_size: int) -> dict[str, Any]:
    """vLLM reads the bucket itself with the Run:ai Model Streamer; Ray Serve LLM then skips its own
    download of a mirror-config model (ray.llm's STREAMING_LOAD_FORMATS). With more than one GPU per
    stage, `distributed` splits the reads among the stage's processes, which share them over NVLink
    (GKE's Run:ai Model Streamer guide), instead of each process reading every tensor."""
    kwargs: dict[str, Any] = {"load_format": "runai_streamer"}
    if tensor_parallel_size > 1:
        kwargs["model_loader_extra_config"] = {"distributed": True}
    return kwargs


def serve_config(spec: StackSpec) -> dict[str, Any]:
    """Return the Ray Serve config (serveConfigV2, parsed) for the stack's LLM."""
    s = spec.serving
    llm_config: dict[str, Any] = {
        "model_loading_config": {"model_id": s.model_id, "model_source": _model_source(s.model_source)},
        "accelerator_type": s.accelerator_type,
        "deployment_config": {"autoscaling_config": {"min_replicas": s.min_replicas,
                                                     "max_replicas": s.max_replicas}},
    }
    if s.runtime_env_vars:
        llm_config["runtime_env"] = {"env_vars": dict(s.runtime_env_vars)}
    llm_config["engine_kwargs"] = {
        "tensor_parallel_size": s.tensor_parallel_size,
        "pipeline_parallel_size": s.pipeline_parallel_size,
        "gpu_memory_utilization": s.gpu_memory_utilization,
        "dtype": s.dtype,
        "max_num_seqs": s.max_num_seqs,
        "max_model_len": s.max_model_len,
        "enable_chunked_prefill": s.enable_chunked_prefill,
        "enable_prefix_caching": s.enable_prefix_caching,
    }
    if s.stream_weights:
        llm_config["engine_kwargs"].update(streaming_engine_kwargs(s.tensor_parallel_size))
    return {"applications": [{
        "args": {"llm_configs": [llm_config]},
        "import_path": "ray.serve.llm:build_openai_app",
        "name": "llm_app",
        "route_prefix": "/",
    }]}


def ray_service_manifest(spec: StackSpec, *, hf_token: bool = False, lease_expiry_epoch_s: int | None = None,
                         run_id: str | None = None) -> dict[str, Any]:
    """Return the RayService manifest for `spec` (apiVersion ray.io/v1, kind RayService).

    `hf_token=True` adds the HF_TOKEN env var from the Secret `serving.hf_token_secret_name` (see
    `hf_token_secret_manifest`). Pure and deterministic: equal arguments give equal manifests.
    """
    s = spec.serving
    body: dict[str, Any] = {
        "serveConfigV2": yaml.safe_dump(serve_config(spec), sort_keys=False),
        "rayClusterConfig": {
            "headGroupSpec": _head_group(spec, hf_token),
            "workerGroupSpecs": [_worker_group(spec, hf_token)],
        },
    }
    if s.upgrade_strategy is not None:
        body = {"upgradeStrategy": {"type": s.upgrade_strategy}, **body}
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": s.ray_service_name,
            "namespace": s.namespace,
            "labels": owner_labels(spec.name, lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id),
        },
        "spec": body,
    }


def _head_group(spec: StackSpec, hf_token: bool) -> dict[str, Any]:
    s = spec.serving
    container: dict[str, Any] = {"name": "ray-head", "image": s.ray_image,
                                 "resources": _resources(s.head_resources), "ports": list(HEAD_PORTS)}
    if hf_token:
        container["env"] = [hf_token_env(spec)]
    # The head gets no GPUs so that it schedules on the CPU pool, as in the upstream sample.
    return {"rayStartParams": {"num-gpus": "0"}, "template": {"spec": {"containers": [container]}}}


def _worker_group(spec: StackSpec, hf_token: bool) -> dict[str, Any]:
    s = spec.serving
    container: dict[str, Any] = {"name": "ray-worker", "image": s.ray_image,
                                 "resources": _resources(s.worker_resources, gpus=s.worker_gpus)}
    if hf_token:
        container["env"] = [hf_token_env(spec)]
    pod_spec: dict[str, Any] = {"containers": [container], **gpu_node_placement(spec)}
    if s.prefetch_weights:
        # The node's cache that the weights-prefetch DaemonSet fills (blocks/render_prefetch.py).
        container["volumeMounts"] = [{"name": CACHE_VOLUME, "mountPath": RAY_HF_CACHE}]
        pod_spec["volumes"] = [node_cache_volume()]
    return {
        # Fixed size (min == max == replicas): pipeline parallelism needs every worker at once.
        "replicas": s.worker_replicas,
        "minReplicas": s.worker_replicas,
        "maxReplicas": s.worker_replicas,
        "groupName": s.worker_group_name,
        "rayStartParams": {},
        "template": {"spec": pod_spec},
    }


def _resources(res: ResourcesSpec, *, gpus: int | None = None) -> dict[str, dict[str, str]]:
    # Requests equal limits (Guaranteed QoS): a 500Gi model worker must not be the first evicted.
    amounts = {"cpu": res.cpu, "memory": res.memory}
    if res.ephemeral_storage is not None:
        amounts["ephemeral-storage"] = res.ephemeral_storage
    if gpus is not None:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"limits": dict(amounts), "requests": dict(amounts)}


def gpu_node_placement(spec: StackSpec) -> dict[str, Any]:
    """nodeSelector and tolerations that put a pod on the stack's GPU pool and nowhere else."""
    return {"nodeSelector": {GKE_ACCELERATOR_LABEL: spec.gpu_pool.accelerator_type},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}


def node_cache_volume() -> dict[str, Any]:
    """The hostPath volume the prefetch pods and the Ray workers share."""
    return {"name": CACHE_VOLUME, "hostPath": {"path": NODE_CACHE_PATH, "type": "DirectoryOrCreate"}}


def hf_token_env(spec: StackSpec) -> dict[str, Any]:
    """The HF_TOKEN env var from the token Secret (`hf_token_secret_manifest`); never the token itself."""
    s = spec.serving
    return {"name": HF_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
        "name": s.hf_token_secret_name, "key": s.hf_token_secret_key}}}


def hf_token_secret_manifest(spec: StackSpec, token: str | SecretStr, *,
                             lease_expiry_epoch_s: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Return the Kubernetes Secret holding the HF token that the RayService's pods reference.

    The only manifest that carries the token (base64, as the API stores it); never log or print it.
    Raises ValueError for an empty token.
    """
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not value or not value.strip():
        raise ValueError("hf token: empty; give a Hugging Face access token (it starts with 'hf_') or none")
    s = spec.serving
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": s.hf_token_secret_name, "namespace": s.namespace,
                     "labels": owner_labels(spec.name, lease_expiry_epoch_s=lease_expiry_epoch_s,
                                            run_id=run_id)},
        "type": "Opaque",
        "data": {s.hf_token_secret_key: base64.b64encode(value.encode()).decode()},
    }

"""The baseline: the guide's steps replayed strictly in sequence, with fixed polling, as a person would.

1. `gcloud container clusters create ...`: create, then wait for the operation (gcloud blocks, polling
   the operation every `GCLOUD_POLL_S`);
2. `gcloud beta container node-pools create ...`: the same;
3. `get-credentials`, then the operator install (Helm-equivalent: every manifest applied server-side,
   then wait until the Deployment is Available, polled like `helm install --wait`);
4. `kubectl apply -f ray-service.deepseek.yaml`, then `kubectl get rayservice -o yaml` every
   `PERSON_POLL_S` until the app is RUNNING (the guide: "After a few minutes..." / "20-30 minutes");
5. `curl` the chat completion (through the API server's service proxy instead of a port-forward).

Nothing overlaps and nothing reacts to a fatal sign: this is the naive procedure. It uses the official
clients through the project's thin gateways (GKE REST client, Kubernetes ApiClient), never our flows or
tasks' waits. Think time between commands is zero, which flatters the baseline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from google.auth.credentials import AnonymousCredentials

from blocks.render_gke import create_cluster_request, create_node_pool_request
from blocks.render_rayservice import ray_service_manifest
from blocks.spec import StackSpec
from tasks.clock import Clock
from tasks.gateways.gke import ClusterRef, GkeGateway
from tasks.gateways.kube import KubeApi, resource_of
from tasks.gateways.kube_client import kube_api_client, static_token_source
from tasks.gateways.llm import LlmApi
from tasks.kuberay_operator import render_operator_manifests

GCLOUD_POLL_S = 5.0        # gcloud waits on the operation itself, re-reading it every few seconds
HELM_POLL_S = 2.0          # helm --wait re-checks the Deployment every 2 s
PERSON_POLL_S = 120.0      # a person re-runs `kubectl get rayservice -o yaml` every 2 minutes
SANDBOX_TOKEN = "anonymous"


@dataclass
class GuideRun:
    """What the replay saw: phases as (name, start_s, end_s) on the clock, the answer, and success."""
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    answer: str = ""
    ok: bool = False


def replay_guide(spec: StackSpec, *, gke_url: str, clock: Clock) -> GuideRun:
    """Run the guide's steps one after the other against `gke_url`; return the phases and the answer."""
    run = GuideRun()
    gke = GkeGateway.connect(AnonymousCredentials(), api_endpoint=gke_url, clock=clock)
    ref = ClusterRef(spec.cluster.project, spec.cluster.location, spec.cluster.name)
    with _phase(run, "cluster", clock):
        op = gke.create_cluster(ref, create_cluster_request(spec).cluster)
        _wait_operation(gke, ref, op.name, clock)
    with _phase(run, "gpu-node-pool", clock):
        pool = create_node_pool_request(spec).node_pool
        op = gke.create_node_pool(ref, pool, host_maintenance_interval=spec.gpu_pool.host_maintenance_interval)
        _wait_operation(gke, ref, op.name, clock)
    kube = KubeApi(kube_api_client(gke.get_cluster(ref), static_token_source(SANDBOX_TOKEN)))
    with _phase(run, "kuberay-operator", clock):
        _helm_install(kube, spec, clock)
    with _phase(run, "ray-service", clock):
        kube.apply(ray_service_manifest(spec))
    with _phase(run, "model-load", clock):
        _poll_ray_service(kube, spec, clock)
    with _phase(run, "validation", clock):
        run.answer = _curl(kube, spec)
    run.ok = bool(re.search(spec.validation.expected_pattern, run.answer.split("</think>")[-1]))
    return run


class _phase:
    def __init__(self, run: GuideRun, name: str, clock: Clock):
        self.run, self.name, self.clock = run, name, clock

    def __enter__(self) -> None:
        self.start = self.clock.time()

    def __exit__(self, *exc: object) -> None:
        self.run.phases.append((self.name, self.start, self.clock.time()))


def _wait_operation(gke: GkeGateway, ref: ClusterRef, name: str, clock: Clock) -> None:
    while True:
        op = gke.get_operation(ref, name)
        if op.status.name == "DONE":
            if op.error.message or op.status_message:
                raise RuntimeError(f"operation {name} failed: {op.error.message or op.status_message}")
            return
        clock.sleep(GCLOUD_POLL_S)


def _helm_install(kube: KubeApi, spec: StackSpec, clock: Clock) -> None:
    manifests = render_operator_manifests(spec.operator.version, spec.operator.namespace, stack="guide")
    for manifest in manifests:
        kube.apply(manifest)
    deployment = next(m for m in manifests if m.get("kind") == "Deployment")
    while True:
        live = kube.get(resource_of(deployment), deployment["metadata"]["name"], spec.operator.namespace) or {}
        conditions = (live.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions):
            return
        clock.sleep(HELM_POLL_S)


def _poll_ray_service(kube: KubeApi, spec: StackSpec, clock: Clock) -> None:
    manifest = ray_service_manifest(spec)
    while True:
        live = kube.get(resource_of(manifest), spec.serving.ray_service_name, spec.serving.namespace) or {}
        apps = ((live.get("status") or {}).get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        if apps and all(a.get("status") == "RUNNING" for a in apps.values()):
            return
        clock.sleep(PERSON_POLL_S)


def _curl(kube: KubeApi, spec: StackSpec) -> str:
    s, v = spec.serving, spec.validation
    target = kube.proxy_target(s.namespace, f"{s.ray_service_name}-serve-svc", 8000)
    payload: dict[str, Any] = {"model": s.model_id, "messages": [{"role": "user", "content": v.prompt}],
                               "temperature": v.temperature}
    with LlmApi(target.base_url, token=target.token, verify=target.ssl_context) as llm:
        response = llm.chat_completion(payload, timeout_wall_s=120)
    choices = (response.body or {}).get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")

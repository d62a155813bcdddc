"""A simulated cluster without the HTTP server: store, clock, profile, faults, the API server's
deleter (graceful deletion and GC), and every controller, driven directly through the store."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.context import ClusterContext
from sandbox.kube.controllers import CONTROLLERS, add_node_pool_nodes
from sandbox.kube.deletion import Deleter
from sandbox.kube.rayserve import serve_registry
from sandbox.kube.store import ObjectStore
from sandbox.profile import load_profile

UPSTREAM = Path(__file__).resolve().parents[2] / "third_party" / "kuberay" / "v1.7.0" / "ray-operator" / "config"
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
DEPLOYMENTS = ("apps", "deployments")
RAYSERVICES = ("ray.io", "rayservices")

GPU_POOL = {"name": "gpu-node-pool", "locations": ["us-east5-a"],
            "config": {"machineType": "a3-highgpu-8g",
                       "accelerators": [{"acceleratorType": "nvidia-h100-80gb", "acceleratorCount": "8"}]}}
CPU_POOL = {"name": "default-pool", "locations": ["us-east5-a"],
            "config": {"machineType": "e2-standard-16", "gcfsConfig": {"enabled": True}}}


class Sim:
    """A cluster under test: the context plus helpers to wait in real time for simulated outcomes."""

    def __init__(self, ctx: ClusterContext, controllers: list[Any], deleter: Deleter):
        self.ctx, self.controllers, self.deleter = ctx, controllers, deleter

    @property
    def store(self) -> ObjectStore:
        return self.ctx.store

    def wait_for(self, predicate: Callable[[], Any], *, what: str, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if result := predicate():
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what} (simulated {self.ctx.clock.elapsed_s():.0f}s)")

    def rayservice(self, name: str = "deepseek-r1", namespace: str = "default") -> dict[str, Any]:
        return self.store.get(RAYSERVICES, namespace, name) or {}

    def kick_all(self) -> None:
        for controller in self.controllers:
            controller.kick()


def make_sim(time_scale: float, profile: str = "realistic") -> Sim:
    clock = ScaledClock(time_scale)
    ctx = ClusterContext(cluster=ClusterRef("proj", "us-east5-a", "kuberay-gpu-cluster"),
                         store=ObjectStore(clock.rfc3339), clock=clock, profile=load_profile(profile), faults=Faults())
    ctx.store.create(("", "namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    deleter = Deleter(ctx)
    deleter.start()
    controllers = []
    for cls in CONTROLLERS:
        controller = cls()
        controller.start(ctx)
        controllers.append(controller)
    return Sim(ctx, controllers, deleter)


def stop_sim(sim: Sim) -> None:
    for controller in sim.controllers:
        controller.stop()
    sim.deleter.stop()
    sim.ctx.clock.stop()


@pytest.fixture
def sim() -> Iterator[Sim]:
    simulation = make_sim(1500)
    yield simulation
    stop_sim(simulation)


def install_crds(sim: Sim, names: tuple[str, ...] = ("rayclusters", "rayjobs", "rayservices")) -> None:
    """The KubeRay CRDs as the API server stores them once Established (metadata, names, status only:
    the controllers never read the schemas, and parsing the 3 MB of upstream YAML takes seconds)."""
    for plural in names:
        kind = {"rayclusters": "RayCluster", "rayjobs": "RayJob", "rayservices": "RayService",
                "raycronjobs": "RayCronJob"}[plural]
        spec_names = {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"}
        sim.store.create(CRDS, {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.ray.io", "annotations": {"controller-gen.kubebuilder.io/version": "v0.18.0"}},
            "spec": {"group": "ray.io", "names": spec_names, "scope": "Namespaced",
                     "versions": [{"name": "v1", "served": True, "storage": True}]},
            "status": {"conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                                      {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}],
                       "acceptedNames": spec_names, "storedVersions": ["v1"]}})


def install_operator(sim: Sim, namespace: str = "default") -> dict[str, Any]:
    """The upstream manager Deployment with the namespace and image kustomize would set."""
    deployment = yaml.safe_load((UPSTREAM / "manager" / "manager.yaml").read_text())
    deployment["metadata"]["namespace"] = namespace
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/kuberay/operator:v1.7.0"
    return sim.store.create(DEPLOYMENTS, deployment)


def sample_rayservice() -> dict[str, Any]:
    service = yaml.safe_load((UPSTREAM / "samples" / "ray-service.deepseek.yaml").read_text())
    service["metadata"]["namespace"] = "default"
    return copy.deepcopy(service)


def add_guide_nodes(sim: Sim) -> None:
    """The guide's cluster: one e2-standard-16 (image streaming on) and two a3-highgpu-8g."""
    add_node_pool_nodes(sim.ctx, CPU_POOL, ["gke-kuberay-gpu-cluster-default-pool-1a2b3c4d-x1y2"])
    add_node_pool_nodes(sim.ctx, GPU_POOL, ["gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-a1b2",
                                            "gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-c3d4"])


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def is_serving(rs: dict[str, Any]) -> bool:
    status = rs.get("status") or {}
    apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    return (condition(rs, "Ready").get("status") == "True" and bool(apps)
            and all(a.get("status") == "RUNNING" for a in apps.values())
            and status.get("observedGeneration") == rs["metadata"].get("generation"))


PODS = ("", "pods")
SERVICES = ("", "services")


def bring_up(sim: Sim, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Operator, CRDs, the guide's nodes and the sample RayService, until it serves."""
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())
    return sim.wait_for(lambda: (rs := sim.rayservice()) and is_serving(rs) and rs, what="RayService serving",
                        timeout_s=timeout_s)


def pods(sim: Sim, selector: str | None = None) -> list[dict[str, Any]]:
    return sim.store.list(PODS, "default", selector)[0]


def container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def waiting_reason(pod: dict[str, Any]) -> str | None:
    return ((container_state(pod).get("state") or {}).get("waiting") or {}).get("reason")


def events(sim: Sim, reason: str | None = None) -> list[dict[str, Any]]:
    items = sim.store.list(("", "events"))[0]
    return [e for e in items if reason is None or e["reason"] == reason]


def call_service(sim: Sim, service: str, port: int, method: str, path: str, body: Any = None, query: str = ""):
    """Reach a Service the way the API server's proxy does: a ready pod behind it, its port handler."""
    import json

    from sandbox.kube.context import HttpRequest
    svc = sim.store.get(SERVICES, "default", service)
    assert svc is not None, f"service {service} does not exist"
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    ready = [p for p in pods(sim, selector) if condition(p, "Ready").get("status") == "True"]
    assert ready, f"no ready pod behind {service}"
    handler = sim.ctx.pod_ports.handler("default", ready[0]["metadata"]["name"], port)
    assert handler is not None, f"nothing listens on {ready[0]['metadata']['name']}:{port}"
    payload = json.dumps(body).encode() if body is not None else b""
    return handler(HttpRequest(method, path, query, {"content-type": "application/json"}, payload))

def placed_run(sim):
    """The LLM app's run once its replica is placed (the download started)."""
    def run():
        status = (sim.rayservice().get("status") or {}).get("pendingServiceStatus") or {}
        cluster = status.get("rayClusterName")
        instance = serve_registry(sim.ctx).instance("default", cluster) if cluster else None
        app = instance.apps.get("llm_app") if instance else None
        return (instance, app) if app is not None and app.replica_at is not None else None
    return sim.wait_for(run, what="the replica placed", timeout_s=30)

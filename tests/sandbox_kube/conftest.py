"""A running simulated cluster (API server only, no controllers) and official clients pointed at it.

The `kubernetes` client is configured as the project's gateway does it for GKE (reference/gke.md §6):
host, the cluster CA in memory and a bearer token; no kubeconfig file.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.cluster import KubeCluster

# The project's vendored copy of the upstream files (checksummed against upstream in test_kuberay_manifests).
KUBERAY = Path(__file__).resolve().parents[2] / "third_party" / "kuberay" / "v1.7.0" / "ray-operator" / "config"
CRD_DIR = KUBERAY / "crd" / "bases"
SAMPLE = KUBERAY / "samples" / "ray-service.deepseek.yaml"
CRD_FILES = sorted(CRD_DIR.glob("ray.io_*.yaml"))
TIME_SCALE = 60.0

try:
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader  # type: ignore[assignment]


@pytest.fixture(scope="session")
def kube() -> KubeCluster:
    cluster = KubeCluster(ClusterRef("sandbox-project", "us-east5", "kube-tests"), clock=ScaledClock(TIME_SCALE),
                          profile={}, faults=Faults(seed=7), controllers=())
    cluster.start()
    yield cluster
    cluster.stop()


def client_for(cluster: KubeCluster, token: str | None = "ya29.sandbox-token") -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    cfg.host = f"https://{cluster.endpoint}"
    cfg.ca_cert_data = cluster.ca_pem
    if token is not None:
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.ApiClient(cfg)


@pytest.fixture(scope="session")
def api(kube: KubeCluster) -> kubernetes.client.ApiClient:
    return client_for(kube)


@pytest.fixture(scope="session")
def core(api) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture(scope="session")
def custom(api) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def namespace(core) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def load_yaml_cached(path: Path, cache: pytest.Cache | None) -> Any:
    """Parse `path` once, then reuse its JSON form from pytest's cache (YAML parsing of the ~1 MB
    KubeRay CRDs takes about a second each, JSON ~10 ms). Without a cache (`-p no:cacheprovider`), parse."""
    data = path.read_bytes()
    if cache is None:
        return yaml.load(data, Loader=Loader)
    folder = cache.mkdir("sandbox_kube_yaml")
    cached = folder / f"{hashlib.sha256(data).hexdigest()}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    parsed = yaml.load(data, Loader=Loader)
    cached.write_text(json.dumps(parsed))
    return parsed


@pytest.fixture(scope="session")
def kuberay_crds(pytestconfig) -> list[dict[str, Any]]:
    """The four upstream KubeRay v1.7.0 CRDs, parsed once per session (they are ~1 MB of YAML each)."""
    return [load_yaml_cached(path, getattr(pytestconfig, "cache", None)) for path in CRD_FILES]


@pytest.fixture(scope="session")
def sample_rayservice() -> dict[str, Any]:
    return yaml.load(SAMPLE.read_bytes(), Loader=Loader)


@pytest.fixture(scope="session")
def installed_crds(api, kuberay_crds) -> list[str]:
    """Server-side apply the KubeRay CRDs once; returns their names."""
    ext = kubernetes.client.ApiextensionsV1Api(api)
    for crd in kuberay_crds:
        ext.patch_custom_resource_definition(crd["metadata"]["name"], crd, field_manager="kuberay-tests",
                                             force=True, _content_type="application/apply-patch+yaml")
    return [crd["metadata"]["name"] for crd in kuberay_crds]


def pod_manifest(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec}}


def raw_request(cluster: KubeCluster, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = "t") -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request with nothing but the standard library (status, headers, body); no raising."""
    request = urllib.request.Request(f"https://{cluster.endpoint}{path}", data=body, method=method,
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              **(headers or {})})
    context = ssl.create_default_context(cadata=cluster.ca_pem)
    try:
        with urllib.request.urlopen(request, context=context) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def raw_get(cluster: KubeCluster, path: str) -> Any:
    """GET `path` and decode JSON; raise urllib.error.HTTPError on an error status."""
    request = urllib.request.Request(f"https://{cluster.endpoint}{path}", headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cadata=cluster.ca_pem)) as answer:
        return json.load(answer)

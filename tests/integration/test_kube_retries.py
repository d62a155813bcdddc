"""One Kubernetes API request is retried by the gateway's urllib3 policy, against the sandbox's API server.

The client is the production one (`kube_client.kube_api_client` from a GKE Cluster: endpoint, CA,
bearer token); the errors are the sandbox's `kube_transient` faults (429/503 carry `Retry-After: 1`,
500 none). What a request went through is read from the sandbox's request log (simulated time, one
second resolution): at TIME_SCALE, one wall second between two attempts is TIME_SCALE simulated seconds.
"""

from __future__ import annotations

import base64
import shutil
import socket
import time
import uuid
from datetime import datetime

import pytest
from google.cloud.container_v1 import types as T

from blocks.errors import PermanentError
from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.certs import generate_serving_certs
from sandbox.kube.cluster import KubeCluster
from tasks.gateways.kube import NAMESPACE, SECRET, SERVICE, SERVICE_ACCOUNT, KubeApi, KubeUnavailable
from tasks.gateways.kube_client import kube_api_client, static_token_source

TIME_SCALE = 100.0


@pytest.fixture(scope="module")
def cluster():
    cluster = KubeCluster(ClusterRef("sandbox-project", "us-east5-a", "kube-retries"), clock=ScaledClock(TIME_SCALE),
                          profile={}, faults=Faults(seed=8), controllers=())
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.ctx.clock.stop()


def gke_cluster(endpoint: str, ca_pem: str) -> T.Cluster:
    return T.Cluster(name="kube-retries", endpoint=endpoint, status=T.Cluster.Status.RUNNING,
                     master_auth=T.MasterAuth(cluster_ca_certificate=base64.b64encode(ca_pem.encode()).decode()))


def kube_for(endpoint: str, ca_pem: str) -> KubeApi:
    return KubeApi(kube_api_client(gke_cluster(endpoint, ca_pem), static_token_source("sandbox-token")),
                   request_timeout_s=10)


@pytest.fixture
def kube(cluster):
    api = kube_for(cluster.endpoint, cluster.ca_pem)
    yield api
    cluster.ctx.faults.clear()


@pytest.fixture
def namespace(cluster, kube) -> str:
    name = f"r-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def attempts(cluster, method: str, path: str, since: int) -> list[float]:
    """Simulated epoch seconds of each request `method path` received since log entry `since`."""
    return [datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            for r in cluster.requests()[since:] if r["method"] == method and r["path"] == path]


def service_account(namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace,
                                                                       "labels": {"app": "retries"}}}


def test_gets_lists_applies_and_deletes_ride_out_30_percent_429_and_503(cluster, kube, namespace):
    where = f"/api/v1/namespaces/{namespace}/*"
    cluster.ctx.faults.add({"kind": "kube_transient", "status": 503, "rate": 0.15, "path": where})
    cluster.ctx.faults.add({"kind": "kube_transient", "status": 429, "rate": 0.18, "path": where})
    since = len(cluster.requests())
    names = ["a", "b", "c"]

    applied = [kube.apply(service_account(namespace, n)) for n in names]
    assert [o["metadata"]["name"] for o in applied] == names
    assert all(kube.get(SERVICE_ACCOUNT, n, namespace)["metadata"]["labels"] == {"app": "retries"} for n in names)
    listed = kube.list(SERVICE_ACCOUNT, namespace, label_selector="app=retries").items
    assert sorted(o["metadata"]["name"] for o in listed) == names
    again = kube.apply(service_account(namespace, "a"))
    assert again["metadata"]["resourceVersion"] == applied[0]["metadata"]["resourceVersion"]
    assert [kube.delete(SERVICE_ACCOUNT, n, namespace) for n in names] == [True, True, True]
    assert [kube.get(SERVICE_ACCOUNT, n, namespace) for n in names] == [None, None, None]

    calls = 3 + 3 + 1 + 1 + 3 + 3
    fired = {f["status"]: f["fired"] for f in cluster.ctx.faults.list()}
    assert fired[503] >= 1 and fired[429] >= 1, fired
    sent = [r for r in cluster.requests()[since:] if r["path"].startswith(f"/api/v1/namespaces/{namespace}/")]
    assert len(sent) == calls + fired[503] + fired[429]          # every failed attempt was repeated


@pytest.mark.parametrize("status, retry_after_s", [(500, 0), (503, 1)])
def test_when_every_request_fails_the_call_raises_kube_unavailable_after_a_bounded_wait(
        cluster, kube, namespace, status, retry_after_s):
    path = f"/api/v1/namespaces/{namespace}/secrets/s"
    cluster.ctx.faults.add({"kind": "kube_transient", "status": status, "rate": 1.0, "path": path})
    since, started = len(cluster.requests()), time.monotonic()
    with pytest.raises(KubeUnavailable, match=rf"Secret {namespace}/s: API server busy or failing \(HTTP {status}\)"):
        kube.get(SECRET, "s", namespace)
    wall_s = time.monotonic() - started
    assert len(attempts(cluster, "GET", path, since)) == 5            # the request and 4 repeats
    # Backoff 0 + 0.2 + 0.4 + 0.8 s (+ jitter), or Retry-After: 1 s before each repeat.
    assert 4 * retry_after_s <= wall_s < 4 * retry_after_s + 3.0


def test_a_429_waits_its_retry_after_and_a_500_is_repeated_at_once(cluster, kube, namespace):
    kube.apply(service_account(namespace, "paced"))
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/paced"
    spans = {}
    for status in (429, 500):
        cluster.ctx.faults.add({"kind": "kube_transient", "status": status, "times": 2, "path": path})
        since = len(cluster.requests())
        assert kube.get(SERVICE_ACCOUNT, "paced", namespace)["metadata"]["name"] == "paced"
        seen = attempts(cluster, "GET", path, since)
        assert len(seen) == 3, seen
        spans[status] = (seen[-1] - seen[0]) / TIME_SCALE              # wall seconds from first to last
    assert spans[429] >= 1.8, spans                                   # two waits of Retry-After: 1
    assert spans[500] < spans[429] / 2, spans                         # 0 then ~0.2 s of backoff


def test_apply_and_delete_are_repeated_after_server_errors(cluster, kube, namespace):
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/w"
    cluster.ctx.faults.add({"kind": "kube_transient", "status": 504, "times": 2, "path": path, "method": "PATCH"})
    cluster.ctx.faults.add({"kind": "kube_transient", "status": 500, "times": 2, "path": path, "method": "DELETE"})
    since = len(cluster.requests())
    assert kube.apply(service_account(namespace, "w"))["metadata"]["name"] == "w"
    assert kube.delete(SERVICE_ACCOUNT, "w", namespace) is True
    assert len(attempts(cluster, "PATCH", path, since)) == 3
    assert len(attempts(cluster, "DELETE", path, since)) == 3
    assert kube.get(SERVICE_ACCOUNT, "w", namespace) is None and cluster.ctx.faults.list() == []


def test_a_watch_is_not_repeated_by_urllib3(cluster, kube, namespace):
    version = kube.list(SERVICE_ACCOUNT, namespace).resource_version
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    cluster.ctx.faults.add({"kind": "kube_transient", "status": 503, "times": 1, "path": path})
    since = len(cluster.requests())
    with pytest.raises(KubeUnavailable, match="HTTP 503"):
        list(kube.watch(SERVICE_ACCOUNT, namespace, resource_version=version, timeout_s=5, idle_timeout_s=0.2))
    assert len(attempts(cluster, "GET", path, since)) == 1


def test_a_service_proxy_503_is_the_backends_answer_and_not_repeated(cluster, kube, namespace):
    kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dash", "namespace": namespace},
                "spec": {"selector": {"app": "nothing-here"}, "ports": [{"name": "dashboard", "port": 8265}]}})
    assert kube.get(SERVICE, "dash", namespace) is not None
    path = f"/api/v1/namespaces/{namespace}/services/dash:dashboard/proxy/nodes"
    since = len(cluster.requests())
    with pytest.raises(KubeUnavailable, match='no endpoints available for service "dash"'):
        kube.proxy_get_json(namespace, "dash", "dashboard", "/nodes")
    assert len(attempts(cluster, "GET", path, since)) == 1


def test_a_down_api_server_fails_fast(cluster):
    with socket.socket() as s:                                   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(KubeUnavailable, match="Namespace default: GET /api/v1/namespaces/default failed"):
        kube_for(f"127.0.0.1:{port}", cluster.ca_pem).get(NAMESPACE, "default")
    assert time.monotonic() - started < 5.0                      # connection refused x5, ~1.4 s of backoff


def test_a_certificate_another_ca_signed_is_permanent_and_not_repeated(cluster):
    other = generate_serving_certs()
    try:
        since = len(cluster.requests())
        with pytest.raises(PermanentError, match="not signed by the configured cluster CA"):
            kube_for(cluster.endpoint, other.ca_pem).get(NAMESPACE, "default")
        assert cluster.requests()[since:] == []                   # TLS refused it before any request
    finally:
        shutil.rmtree(other.directory, ignore_errors=True)

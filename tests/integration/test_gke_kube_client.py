"""The Kubernetes client built from a GKE Cluster (endpoint + CA + token) against the sandbox's API servers."""

from __future__ import annotations

import base64
import datetime

import kubernetes
import pytest
import urllib3
from google.cloud.container_v1 import types as T

from sandbox.app import Sandbox
from sandbox.testing import wait_for
from tasks.capacity import ensure_gpu_capacity
from tasks.clock import ScaledClock
from tasks.cluster import cluster_ref, ensure_cluster
from tasks.gateways.kube_client import google_token_source, kube_api_client, static_token_source
from tests.integration.gke_support import TIME_SCALE, connect, make_spec
from tests.unit.test_gke_kube_client import CountingCredentials, _ca_pem


@pytest.fixture(scope="module")
def stack():
    with Sandbox(time_scale=TIME_SCALE, kubernetes=True) as sandbox:
        clock = ScaledClock(TIME_SCALE)
        spec = make_spec(sandbox)
        gke = connect(spec, clock)
        ensure_cluster.fn(gke, spec, clock=clock)
        yield sandbox, spec, gke, clock


def _nodes(api: kubernetes.client.ApiClient, selector: str = "") -> list:
    return kubernetes.client.CoreV1Api(api).list_node(label_selector=selector).items


def test_the_cluster_api_is_reached_with_its_own_ca_and_a_bearer_token(stack):
    _, spec, gke, _ = stack
    cluster = gke.get_cluster(cluster_ref(spec))
    nodes = _nodes(kube_api_client(cluster, static_token_source("sandbox-token")))
    assert [n.metadata.labels["cloud.google.com/gke-nodepool"] for n in nodes] == ["default-pool"]


def test_another_ca_is_refused_by_tls_verification(stack):
    _, spec, gke, _ = stack
    cluster = T.Cluster(gke.get_cluster(cluster_ref(spec)))
    cluster.master_auth.cluster_ca_certificate = base64.b64encode(_ca_pem().encode()).decode()
    api = kube_api_client(cluster, static_token_source("sandbox-token"))
    api.configuration.retries = 0
    with pytest.raises(urllib3.exceptions.MaxRetryError, match="CERTIFICATE_VERIFY_FAILED"):
        kubernetes.client.CoreV1Api(api).list_node(_request_timeout=5)


def test_a_google_token_is_refreshed_before_requests_once_it_is_due(stack):
    _, spec, gke, _ = stack
    credentials = CountingCredentials(datetime.timedelta(seconds=30))   # always inside the refresh window
    api = kube_api_client(gke.get_cluster(cluster_ref(spec)), google_token_source(credentials))
    for _ in range(3):
        assert _nodes(api)
    assert credentials.refreshes == 4                     # one at build time, then one before each request
    assert api.configuration.api_key["authorization"] == "token-4"


def test_gpu_nodes_of_the_pool_appear_with_their_gpus_through_the_client(stack):
    sandbox, spec, gke, clock = stack
    ensure_gpu_capacity.fn(gke, spec, clock=clock)
    api = kube_api_client(gke.get_cluster(cluster_ref(spec)), static_token_source("sandbox-token"))
    selector = f"cloud.google.com/gke-nodepool={spec.gpu_pool.name}"

    def gpus_ready():
        nodes = _nodes(api, selector)
        return len(nodes) == 2 and all((n.status.allocatable or {}).get("nvidia.com/gpu") == "8" for n in nodes)
    assert wait_for(gpus_ready, timeout_s=10, what="8 allocatable GPUs on both nodes")

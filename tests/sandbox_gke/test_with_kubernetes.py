"""GKE and the simulated Kubernetes together: what GKE reports is where a real client finds the cluster."""

from __future__ import annotations

import base64

import httpx
import kubernetes
import urllib3

from sandbox.app import Sandbox
from sandbox.testing import wait_for
from tests.sandbox_gke.conftest import cluster_name, gpu_pool_spec, make_client, running_cluster, wait_op


def _kube(cluster) -> kubernetes.client.CoreV1Api:
    """A Kubernetes client built from get_cluster alone, as reference/gke.md section 6 does."""
    config = kubernetes.client.Configuration()
    config.host = f"https://{cluster.endpoint}"
    config.ca_cert_data = base64.b64decode(cluster.master_auth.cluster_ca_certificate).decode()
    config.api_key = {"authorization": "sandbox-token"}
    config.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


def _nodes(core: kubernetes.client.CoreV1Api, pool: str) -> list[str]:
    selector = f"cloud.google.com/gke-nodepool={pool}"
    return sorted(n.metadata.name for n in core.list_node(label_selector=selector).items)


def test_endpoint_ca_and_nodes_follow_the_gke_lifecycle():
    with Sandbox(time_scale=3000.0, kubernetes=True) as sandbox:
        client = make_client(sandbox)
        cluster = running_cluster(client)
        core = _kube(cluster)
        inventory = sandbox.inventory()["clusters"][0]
        default_nodes = inventory["node_pools"][0]["nodes"]
        assert wait_for(lambda: _nodes(core, "default-pool"), 5) == sorted(default_nodes)

        wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
        gpu_nodes = [p for p in sandbox.inventory()["clusters"][0]["node_pools"] if p["name"] == "gpu-node-pool"]
        assert wait_for(lambda: _nodes(core, "gpu-node-pool"), 5) == sorted(gpu_nodes[0]["nodes"])
        node = core.read_node(gpu_nodes[0]["nodes"][0])
        assert node.metadata.labels["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"
        assert sandbox.inventory()["clusters"][0]["kubernetes"]      # the Kubernetes side's own inventory
        over_http = httpx.get(f"{sandbox.gke_url}/_sandbox/inventory").json()
        assert over_http["clusters"][0]["kubernetes"] and over_http["billing"]["pools"]

        wait_op(client, client.delete_node_pool(name=f"{cluster_name()}/nodePools/gpu-node-pool"))
        wait_for(lambda: _nodes(core, "gpu-node-pool") == [], 5, what="GPU nodes removed")
        assert _nodes(core, "default-pool") == sorted(default_nodes)

        wait_op(client, client.delete_cluster(name=cluster_name()))
        wait_for(lambda: _unreachable(core), 5, what="the API server to go with the cluster")


def _unreachable(core: kubernetes.client.CoreV1Api) -> bool:
    try:
        core.list_node(_request_timeout=1)
    except urllib3.exceptions.HTTPError:       # connection refused, after the client's retries
        return True
    return False

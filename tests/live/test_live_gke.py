"""Real GKE: create and delete a small cluster and a one-node L4 GPU pool with the production tasks.

Skipped unless GOOGLE_APPLICATION_CREDENTIALS (a service account key with roles/container.admin and
roles/iam.serviceAccountUser) and GKE_LLM_FLOWS_LIVE_PROJECT are set. GKE_LLM_FLOWS_LIVE_ZONE picks
the zone (default us-central1-a). Costs a few cents: an e2-standard-4 node and a g2-standard-4 (spot,
falling back to on-demand) for the ~15 minutes the test runs; everything is deleted in `finally`.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

from blocks.spec import StackSpec
from tasks.capacity import ensure_gpu_capacity
from tasks.clock import SystemClock
from tasks.cluster import cluster_ref, delete_cluster, ensure_cluster
from tasks.gateways.gke import GkeGateway
from tasks.gke_credentials import gke_credentials
from tasks.node_pool import delete_gpu_node_pool

pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not (os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
                            and os.environ.get("GKE_LLM_FLOWS_LIVE_PROJECT")),
                       reason="live GKE test: set GOOGLE_APPLICATION_CREDENTIALS and GKE_LLM_FLOWS_LIVE_PROJECT"),
]


@pytest.fixture
def live_spec() -> StackSpec:
    zone = os.environ.get("GKE_LLM_FLOWS_LIVE_ZONE", "us-central1-a")
    return StackSpec(
        name="live-test",
        cluster={"project": os.environ["GKE_LLM_FLOWS_LIVE_PROJECT"], "location": zone,
                 "name": f"gllmf-live-{secrets.token_hex(3)}", "machine_type": "e2-standard-4", "node_count": 1},
        gpu_pool={"name": "gpu-l4", "machine_type": "g2-standard-4", "accelerator_type": "nvidia-l4",
                  "accelerator_count": 1, "node_count": 1, "capacity_modes": ["spot", "on-demand"],
                  "host_maintenance_interval": None},
        serving={"accelerator_type": "L4", "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
                 "worker_gpus": 1, "worker_replicas": 1, "worker_resources": {"cpu": "2", "memory": "8Gi"},
                 "head_resources": {"cpu": "1", "memory": "4Gi"}})


def _block():
    from prefect_gcp import GcpCredentials

    with open(os.environ["GOOGLE_APPLICATION_CREDENTIALS"], encoding="utf-8") as key_file:
        return GcpCredentials(service_account_info=json.load(key_file))


def test_a_small_cluster_and_gpu_pool_are_created_found_equal_and_deleted(live_spec):
    clock = SystemClock()
    gke = GkeGateway.connect(gke_credentials(_block(), api_endpoint=None), clock=clock)
    try:
        created = ensure_cluster.fn(gke, live_spec, clock=clock)
        assert created.steps[0].startswith("created")
        assert not ensure_cluster.fn(gke, live_spec, clock=clock).changed
        capacity = ensure_gpu_capacity.fn(gke, live_spec, clock=clock)
        assert capacity.pool.live.status.name == "RUNNING"
        assert not ensure_gpu_capacity.fn(gke, live_spec, clock=clock).pool.changed
    finally:
        delete_gpu_node_pool.fn(gke, live_spec, clock=clock)
        delete_cluster.fn(gke, live_spec, clock=clock)
    assert gke.get_cluster(cluster_ref(live_spec)) is None

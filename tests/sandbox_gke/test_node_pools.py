"""Node pools through the official client (v1) and raw v1beta1 JSON (the guide's PERIODIC maintenance)."""

from __future__ import annotations

import json

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud.container_v1 import types as T
from google.protobuf import json_format

from tests.sandbox_gke.conftest import (
    PARENT,
    ZONE,
    cluster_name,
    cluster_spec,
    gpu_pool_spec,
    running_cluster,
    wait_for,
    wait_op,
)

POOL = f"{cluster_name()}/nodePools/gpu-node-pool"


def test_gpu_pool_create_get_list_delete(watched_client):
    client = watched_client
    running_cluster(client)
    op = client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    assert op.operation_type == T.Operation.Type.CREATE_NODE_POOL
    pool = client.get_node_pool(name=POOL)
    assert pool.status == T.NodePool.Status.PROVISIONING
    assert wait_op(client, op).error.code == 0

    pool = client.get_node_pool(name=POOL)
    assert pool.status == T.NodePool.Status.RUNNING
    assert pool.initial_node_count == 2 and list(pool.locations) == [ZONE]
    accelerator = pool.config.accelerators[0]
    assert (accelerator.accelerator_type, accelerator.accelerator_count) == ("nvidia-h100-80gb", 8)
    assert accelerator.gpu_driver_installation_config.gpu_driver_version == \
        T.GPUDriverInstallationConfig.GPUDriverVersion.LATEST
    assert pool.config.disk_size_gb == 100 and pool.version and pool.instance_group_urls
    listed = client.list_node_pools(parent=cluster_name()).node_pools
    assert [p.name for p in listed] == ["default-pool", "gpu-node-pool"]
    assert client.get_cluster(name=cluster_name()).current_node_count == 3

    op = client.delete_node_pool(name=POOL)
    assert op.operation_type == T.Operation.Type.DELETE_NODE_POOL
    assert client.get_node_pool(name=POOL).status == T.NodePool.Status.STOPPING
    assert wait_op(client, op).error.code == 0
    with pytest.raises(gexc.NotFound) as missing:
        client.get_node_pool(name=POOL)
    assert "nodePools/gpu-node-pool" in missing.value.message
    with pytest.raises(gexc.NotFound):
        client.delete_node_pool(name=POOL)


def test_pool_conflicts_busy_cluster_and_missing_cluster(watched_client):
    client = watched_client
    with pytest.raises(gexc.NotFound):
        client.create_node_pool(parent=cluster_name("nope"), node_pool=gpu_pool_spec())
    create = client.create_cluster(parent=PARENT, cluster=cluster_spec())
    with pytest.raises(gexc.BadRequest) as busy:        # GKE: pools wait for the cluster create
        client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    assert "is currently creating cluster kuberay-gpu-cluster. Please wait" in busy.value.message
    wait_op(client, create)
    op = client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    with pytest.raises(gexc.Conflict) as conflict:
        client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    assert "Already exists: projects/sandbox-project/zones/us-east5-a/clusters/kuberay-gpu-cluster/nodePools/" \
           "gpu-node-pool." in conflict.value.message
    with pytest.raises(gexc.BadRequest) as busy:
        client.delete_cluster(name=cluster_name())
    assert f"Operation {op.name} is currently creating a node pool for cluster kuberay-gpu-cluster." \
        in busy.value.message
    wait_op(client, op)


def _v1beta1_pool_body() -> dict:
    """The guide's `gcloud beta ... --host-maintenance-interval=PERIODIC` pool, as v1beta1 JSON."""
    pool = json.loads(json_format.MessageToJson(T.NodePool.pb(gpu_pool_spec())))
    pool["config"]["hostMaintenancePolicy"] = {"maintenanceInterval": "PERIODIC"}
    return {"nodePool": pool}


def test_v1beta1_pool_keeps_host_maintenance_policy_and_v1_rejects_it(client, gke_sandbox):
    running_cluster(client)
    beta = f"{gke_sandbox.gke_url}/v1beta1/{cluster_name()}/nodePools"
    rejected = httpx.post(f"{gke_sandbox.gke_url}/v1/{cluster_name()}/nodePools", json=_v1beta1_pool_body())
    assert rejected.status_code == 400
    assert 'Unknown name "hostMaintenancePolicy"' in rejected.json()["error"]["message"]

    answer = httpx.post(beta, json=_v1beta1_pool_body())
    assert answer.status_code == 200, answer.text
    op = T.Operation.from_json(answer.text, ignore_unknown_fields=True)
    assert wait_op(client, op).error.code == 0
    beta_pool = httpx.get(f"{beta}/gpu-node-pool").json()
    assert beta_pool["config"]["hostMaintenancePolicy"] == {"maintenanceInterval": "PERIODIC"}
    assert beta_pool["status"] == "RUNNING"       # enum names unless the client asks for integers
    v1_pool = client.get_node_pool(name=POOL)        # the v1 view drops the v1beta1-only field
    assert "hostMaintenancePolicy" not in T.NodePool.to_json(v1_pool)
    assert v1_pool.config.machine_type == "a3-highgpu-8g"
    beta_op = httpx.get(f"{gke_sandbox.gke_url}/v1beta1/{PARENT}/operations/{op.name}").json()
    assert beta_op["status"] == "DONE"


def test_nodes_are_named_like_gke_and_listed_in_inventory(client, gke_sandbox):
    running_cluster(client)
    wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
    pools = {p["name"]: p for p in gke_sandbox.inventory()["clusters"][0]["node_pools"]}
    nodes = pools["gpu-node-pool"]["nodes"]
    assert len(nodes) == 2 and len(set(nodes)) == 2
    assert all(n.startswith("gke-kuberay-gpu-cluster-gpu-node-pool-") and len(n) <= 63 for n in nodes)
    (group_url,) = client.get_node_pool(name=POOL).instance_group_urls
    assert group_url.endswith(f"/zones/{ZONE}/instanceGroupManagers/{nodes[0][:-5]}-grp")   # same MIG
    assert pools["gpu-node-pool"]["accelerator"] == "nvidia-h100-80gb"
    assert pools["gpu-node-pool"]["gpus_per_node"] == 8 and pools["gpu-node-pool"]["vms_running"] == 2
    wait_for(lambda: pools["default-pool"]["status"] == "RUNNING")

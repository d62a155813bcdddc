"""Clusters through the official client over REST: create, progress, get, list, delete, 404, 409, 400."""

from __future__ import annotations

import base64
import json

import pytest
from google.api_core import exceptions as gexc
from google.cloud.container_v1 import types as T

from sandbox.testing import running_sandbox, wait_for
from tests.sandbox_gke.conftest import (
    PARENT,
    PROJECT,
    ZONE,
    RecordingHooks,
    cluster_name,
    cluster_spec,
    make_client,
    running_cluster,
    wait_op,
)


def test_cluster_create_goes_provisioning_then_running_with_labels_as_sent(watched_client):
    client = watched_client
    labels = {"managed-by": "gke-llm-flows", "stack": "deepseek-r1", "lease-expires": "20261128t1900z"}
    op = client.create_cluster(parent=PARENT, cluster=cluster_spec(labels=labels))

    assert op.operation_type == T.Operation.Type.CREATE_CLUSTER
    assert op.status in (T.Operation.Status.PENDING, T.Operation.Status.RUNNING)
    assert op.name.startswith("operation-")
    first = client.get_cluster(name=cluster_name())
    assert first.status == T.Cluster.Status.PROVISIONING
    assert first.node_pools[0].status == T.NodePool.Status.PROVISIONING

    done = wait_op(client, op)
    assert done.error.code == 0 and not done.status_message
    assert done.end_time and done.target_link.endswith(f"/zones/{ZONE}/clusters/kuberay-gpu-cluster")
    cluster = client.get_cluster(name=cluster_name())
    assert cluster.status == T.Cluster.Status.RUNNING
    assert dict(cluster.resource_labels) == labels
    assert cluster.node_pools[0].status == T.NodePool.Status.RUNNING
    assert cluster.node_pools[0].config.machine_type == "e2-standard-16"
    assert cluster.node_pool_defaults.node_config_defaults.gcfs_config.enabled
    assert cluster.current_node_count == 1 and cluster.current_master_version
    assert list(cluster.locations) == [ZONE] and cluster.location == ZONE


def test_list_and_get_clusters_and_operations(client):
    running_cluster(client, "one")
    running_cluster(client, "two")
    names = [c.name for c in client.list_clusters(parent=PARENT).clusters]
    assert names == ["one", "two"]
    everywhere = client.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters
    assert [c.name for c in everywhere] == ["one", "two"]
    assert client.list_clusters(parent="projects/other-project/locations/-").clusters == []
    ops = client.list_operations(parent=PARENT).operations
    assert [o.operation_type for o in ops] == [T.Operation.Type.CREATE_CLUSTER] * 2
    assert all(o.status == T.Operation.Status.DONE for o in ops)
    config = client.get_server_config(name=PARENT)
    assert config.default_cluster_version in config.valid_master_versions


def test_create_existing_cluster_is_409_and_get_missing_is_404(client):
    running_cluster(client)
    with pytest.raises(gexc.Conflict) as conflict:
        client.create_cluster(parent=PARENT, cluster=cluster_spec())
    assert f"Already exists: projects/{PROJECT}/zones/{ZONE}/clusters/kuberay-gpu-cluster." in conflict.value.message
    assert conflict.value.response.json()["error"]["status"] == "ALREADY_EXISTS"
    with pytest.raises(gexc.NotFound) as missing:
        client.get_cluster(name=cluster_name("nope"))
    assert "Not found: projects/sandbox-project/zones/us-east5-a/clusters/nope." in missing.value.message
    with pytest.raises(gexc.NotFound):
        client.delete_cluster(name=cluster_name("nope"))
    with pytest.raises(gexc.NotFound):
        client.get_operation(name=f"{PARENT}/operations/operation-0-missing")


def test_delete_cluster_goes_stopping_then_404(watched_client):
    client = watched_client
    running_cluster(client)
    op = client.delete_cluster(name=cluster_name())
    assert op.operation_type == T.Operation.Type.DELETE_CLUSTER
    assert client.get_cluster(name=cluster_name()).status == T.Cluster.Status.STOPPING
    assert wait_op(client, op).error.code == 0
    with pytest.raises(gexc.NotFound):
        client.get_cluster(name=cluster_name())


def test_a_second_mutation_while_an_operation_runs_is_400_please_wait(watched_client):
    client = watched_client
    op = client.create_cluster(parent=PARENT, cluster=cluster_spec())
    with pytest.raises(gexc.BadRequest) as busy:
        client.delete_cluster(name=cluster_name())
    assert f"Operation {op.name} is currently creating cluster kuberay-gpu-cluster. Please wait and try again " \
           "once it is done." in busy.value.message
    assert busy.value.response.json()["error"]["status"] == "FAILED_PRECONDITION"
    wait_op(client, op)
    wait_op(client, client.delete_cluster(name=cluster_name()))


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["cluster"]["nodePools"][0]["config"].update(fooBar=1), "fooBar"),
    (lambda c: c["cluster"].update(hostMaintenancePolicy={"maintenanceInterval": 2}), "hostMaintenancePolicy"),
    (lambda c: c.update(surprise=True), "surprise"),
])
def test_unknown_fields_are_rejected_with_400_naming_them(gke_sandbox, mutate, field):
    import httpx

    body = json.loads(T.CreateClusterRequest.to_json(T.CreateClusterRequest(cluster=cluster_spec())))
    mutate(body)
    answer = httpx.post(f"{gke_sandbox.gke_url}/v1/{PARENT}/clusters", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and f'Unknown name "{field}"' in error["message"]
    assert gke_sandbox.inventory()["clusters"] == []


@pytest.mark.parametrize("change, expected", [
    ({"name": "Bad_Name"}, 'Invalid value for field "cluster.name": "Bad_Name"'),
    ({"node_pools": [T.NodePool(name="p", initial_node_count=1, config=T.NodeConfig(machine_type="x1-huge"))]},
     '"cluster.nodePools[0].config.machineType": "x1-huge"'),
    ({"node_pools": [T.NodePool(name="p", initial_node_count=1, config=T.NodeConfig(
        machine_type="a3-highgpu-8g", accelerators=[T.AcceleratorConfig(accelerator_type="nvidia-l4",
                                                                        accelerator_count=1)]))]},
     'comes with 8 x nvidia-h100-80gb'),
    ({"node_pools": [T.NodePool(name="p", initial_node_count=0)]}, "initialNodeCount\": 0"),
    ({"node_pools": []}, "needs at least one node pool"),
])
def test_invalid_values_are_400_naming_field_and_value(client, change, expected):
    spec = cluster_spec()
    for key, value in change.items():
        setattr(spec, key, value)
    with pytest.raises(gexc.BadRequest) as bad:
        client.create_cluster(parent=PARENT, cluster=spec)
    assert expected in bad.value.message


def test_hooks_get_the_control_plane_nodes_and_deletion():
    hooks = RecordingHooks()
    with running_sandbox(time_scale=3000, hooks=hooks) as sandbox:
        client = make_client(sandbox)
        cluster = running_cluster(client)
        assert cluster.endpoint == "127.0.0.1:6443"
        assert base64.b64decode(cluster.master_auth.cluster_ca_certificate).decode().startswith("-----BEGIN")
        (kind, (pool, nodes)), = [c for c in hooks.calls if c[0] == "node_pool_running"]
        assert pool == "default-pool" and len(nodes) == 1
        assert nodes[0].startswith("gke-kuberay-gpu-cluster-default-pool-")
        inventory = sandbox.inventory()["clusters"][0]
        assert inventory["kubernetes"] == {"recorded_calls": 2}
        assert inventory["node_pools"][0]["nodes"] == list(nodes)
        wait_op(client, client.delete_cluster(name=cluster_name()))
        wait_for(lambda: ("cluster_deleted", "kuberay-gpu-cluster") in hooks.calls, what="cluster_deleted")
    assert [c[0] for c in hooks.calls] == ["cluster_provisioning", "node_pool_running", "cluster_deleted"]


def test_legacy_zone_paths_serve_the_same_clusters(gke_sandbox, client):
    import httpx

    running_cluster(client)
    base = f"{gke_sandbox.gke_url}/v1/projects/{PROJECT}/zones/{ZONE}"
    assert httpx.get(f"{base}/clusters/kuberay-gpu-cluster").json()["status"] == "RUNNING"
    assert [c["name"] for c in httpx.get(f"{base}/clusters").json()["clusters"]] == ["kuberay-gpu-cluster"]
    assert httpx.get(f"{base}/serverconfig").json()["defaultImageType"] == "COS_CONTAINERD"
    answer = httpx.get(f"{gke_sandbox.gke_url}/v1/projects/{PROJECT}/locations/{ZONE}/clusters/kuberay-gpu-cluster",
                       params={"$alt": "json;enum-encoding=int"})
    assert answer.json()["status"] == 2       # enums as integers when the client asks for them

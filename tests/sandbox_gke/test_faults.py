"""Every injected GKE fault, seen through the official client exactly where real GKE would show it."""

from __future__ import annotations

import httpx
import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud.container_v1 import types as T

from sandbox.testing import pool_inventory, wait_for
from tests.sandbox_gke.conftest import (
    PARENT,
    ZONE,
    cluster_name,
    cluster_spec,
    gpu_pool_spec,
    running_cluster,
    wait_op,
)

POOL = f"{cluster_name()}/nodePools/gpu-node-pool"


def test_stockout_ends_the_operation_with_gce_stockout_and_leaves_the_pool_in_error_unbilled(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "stockout", "zone": ZONE, "times": 1})
    op = client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    assert op.error.code == 0                            # the call itself succeeds: stockout is async
    done = wait_op(client, op)
    assert done.status == T.Operation.Status.DONE
    assert "[GCE_STOCKOUT]" in done.error.message and done.error.code == 8
    assert f"The zone 'projects/sandbox-project/zones/{ZONE}' does not have enough resources" in done.status_message
    assert done.nodepool_conditions[0].code == T.StatusCondition.Code.GCE_STOCKOUT
    pool = client.get_node_pool(name=POOL)
    assert pool.status == T.NodePool.Status.ERROR and "GCE_STOCKOUT" in pool.status_message
    assert pool_inventory(gke_sandbox, "kuberay-gpu-cluster", "gpu-node-pool")["gpu_node_seconds"] == 0.0

    with pytest.raises(gexc.Conflict):                   # the ERROR pool is in the way of a retry...
        client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    wait_op(client, client.delete_node_pool(name=POOL))  # ...until deleted; the fault was used up
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())).error.code == 0
    assert client.get_node_pool(name=POOL).status == T.NodePool.Status.RUNNING


def test_partial_stockout_bills_the_vms_that_came_up_until_the_pool_is_deleted(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "stockout", "zone": ZONE, "created": 1})
    op = wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
    assert "Expected 2, running 1" in op.error.message
    entry = pool_inventory(gke_sandbox, "kuberay-gpu-cluster", "gpu-node-pool")
    assert entry["status"] == "ERROR" and entry["vms_running"] == 1 and len(entry["nodes"]) == 1
    wait_op(client, client.delete_node_pool(name=POOL))
    bill = gke_sandbox.inventory()["billing"]
    gpu = [p for p in bill["pools"] if p["pool"] == "gpu-node-pool"][0]
    assert gpu["vms_running"] == 0
    # one VM, from VM creation (60 s) through the stockout wait (600 s) and the delete (150 s)
    assert 690 <= gpu["gpu_node_seconds"] <= 690 + 200
    before = gpu["gpu_node_seconds"]
    assert [p for p in gke_sandbox.inventory()["billing"]["pools"]
            if p["pool"] == "gpu-node-pool"][0]["gpu_node_seconds"] == before     # stopped counting


def test_stockout_can_target_one_zone_only(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "stockout", "zone": "us-central1-a"})
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())).error.code == 0


def test_transient_503_is_retried_by_the_client_on_reads(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "transient", "status": 503, "times": 2, "path": "/v1/projects/"})
    before = len(gke_sandbox.requests())
    assert client.get_cluster(name=cluster_name()).name == "kuberay-gpu-cluster"
    statuses = [e["status"] for e in gke_sandbox.requests()[before:]]
    assert statuses == [503, 503, 200]


@pytest.mark.parametrize("status, exception", [(429, gexc.TooManyRequests), (500, gexc.InternalServerError),
                                                (503, gexc.ServiceUnavailable)])
def test_transient_errors_on_create_are_raised_at_once(client, gke_sandbox, status, exception):
    gke_sandbox.inject({"kind": "transient", "status": status, "times": 1, "method": "POST"})
    with pytest.raises(exception):
        client.create_cluster(parent=PARENT, cluster=cluster_spec())
    assert gke_sandbox.inventory()["clusters"] == []          # nothing happened
    wait_op(client, client.create_cluster(parent=PARENT, cluster=cluster_spec()))


def test_a_create_whose_answer_is_lost_took_effect_so_the_retry_gets_409(client, gke_sandbox):
    gke_sandbox.inject({"kind": "transient", "status": 503, "times": 1, "method": "POST", "applied": True})
    with pytest.raises(gexc.ServiceUnavailable):
        client.create_cluster(parent=PARENT, cluster=cluster_spec())
    with pytest.raises(gexc.Conflict):
        client.create_cluster(parent=PARENT, cluster=cluster_spec())


def test_transient_rate_fires_on_roughly_that_share_of_requests(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "transient", "status": 429, "rate": 0.5, "path": "/v1/projects/sandbox-project/"})
    outcomes = []
    for _ in range(40):
        try:
            client.get_cluster(name=cluster_name())
            outcomes.append(True)
        except gexc.TooManyRequests:
            outcomes.append(False)
    assert 8 <= outcomes.count(False) <= 32


def test_busy_cluster_fault_answers_please_wait_on_mutations_only(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "busy_cluster", "times": 2})
    for _ in range(2):
        with pytest.raises(gexc.BadRequest) as busy:
            client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
        assert "is currently upgrading cluster kuberay-gpu-cluster. Please wait and try again once it is done." \
            in busy.value.message
    assert client.get_cluster(name=cluster_name()).status == T.Cluster.Status.RUNNING
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())).error.code == 0


def test_quota_is_a_synchronous_403_naming_the_metric(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "quota", "metric": "NVIDIA_H100_GPUS", "limit": 8, "times": 1})
    with pytest.raises(gexc.Forbidden) as denied:
        client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    assert ('Insufficient regional quota to satisfy request: resource "NVIDIA_H100_GPUS": request requires '
            "'16.0' and is short '8.0'") in denied.value.message
    assert denied.value.response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert [p.name for p in client.list_node_pools(parent=cluster_name()).node_pools] == ["default-pool"]


def test_quota_on_cluster_create_names_cpus(client, gke_sandbox):
    gke_sandbox.inject({"kind": "quota", "metric": "CPUS"})
    with pytest.raises(gexc.Forbidden) as denied:
        client.create_cluster(parent=PARENT, cluster=cluster_spec())
    assert 'resource "CPUS": request requires \'16.0\'' in denied.value.message


def test_concurrent_operations_quota_is_429_too_many_operations(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "concurrent_ops_quota", "times": 1})
    with pytest.raises(gexc.TooManyRequests) as limited:
        client.delete_cluster(name=cluster_name())
    assert 'Too many operations: cluster "kuberay-gpu-cluster" hits the concurrent operations quota 5' \
        in limited.value.message
    wait_op(client, client.delete_cluster(name=cluster_name()))


def test_faults_through_the_control_api(gke_sandbox, client):
    url = "/_sandbox/faults"
    http = httpx.Client(base_url=gke_sandbox.gke_url)
    stored = http.post(url, json={"kind": "stockout", "zone": ZONE, "times": 3}).json()
    assert stored["id"] and stored["fired"] == 0
    both = http.post(url, json=[{"kind": "transient", "path": "/v1/"}, {"kind": "image_pull_backoff"}]).json()
    assert both[0]["path"] == "/v1/*" and both[0]["status"] == 503
    assert [f["kind"] for f in http.get(url).json()] == ["stockout", "transient", "image_pull_backoff"]
    http.delete(url, params={"kind": "transient"})
    assert [f["kind"] for f in http.get(url).json()] == ["stockout", "image_pull_backoff"]
    http.delete(url)
    assert http.get(url).json() == []
    for bad, says in [({"kind": "stockout", "zon": ZONE}, "no parameter(s) ['zon']"),
                      ({"kind": "transient", "status": 404}, "must be one of"),
                      ({"kind": "quota", "times": 0}, "'times' must be >= 1"),
                      ({"kind": "slow_response", "delay_s": 1000}, "between 0 and 600 real seconds"),
                      ({"zone": ZONE}, "string 'kind'")]:
        answer = http.post(url, json=bad)
        assert answer.status_code == 400 and says in answer.json()["error"]["message"]


def test_auto_upgrade_after_create_holds_the_cluster_with_a_real_operation(client, gke_sandbox):
    gke_sandbox.inject({"kind": "auto_upgrade", "cluster": "kuberay-gpu-cluster", "duration_s": 1800})
    wait_op(client, client.create_cluster(parent=PARENT, cluster=cluster_spec()))
    assert client.get_cluster(name=cluster_name()).status == T.Cluster.Status.RECONCILING
    with pytest.raises(gexc.BadRequest) as busy:
        client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())
    blocking = busy.value.message.split("Operation ")[1].split(" ")[0]
    assert f"Operation {blocking} is currently upgrading cluster kuberay-gpu-cluster. Please wait" \
        in busy.value.message
    upgrade = client.get_operation(name=f"{PARENT}/operations/{blocking}")   # a real, pollable operation
    assert upgrade.operation_type == T.Operation.Type.UPGRADE_MASTER
    assert upgrade.status != T.Operation.Status.DONE
    wait_op(client, upgrade)
    assert client.get_cluster(name=cluster_name()).status == T.Cluster.Status.RUNNING
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec())).error.code == 0


def test_a_slow_response_runs_into_the_clients_timeout_but_the_create_took_effect(client, gke_sandbox):
    gke_sandbox.inject({"kind": "slow_response", "delay_s": 1.0, "method": "POST", "times": 1})
    with pytest.raises(requests.exceptions.ReadTimeout):     # not an api_core error (gke.md section 3)
        client.create_cluster(parent=PARENT, cluster=cluster_spec(), timeout=0.3)
    wait_for(lambda: gke_sandbox.inventory()["clusters"], 5, what="the create to land")
    with pytest.raises(gexc.Conflict):
        client.create_cluster(parent=PARENT, cluster=cluster_spec())


def test_stockout_can_target_one_capacity_mode(client, gke_sandbox):
    running_cluster(client)
    gke_sandbox.inject({"kind": "stockout", "zone": ZONE, "capacity": "on-demand"})
    on_demand = wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
    assert "GCE_STOCKOUT" in on_demand.error.message
    wait_op(client, client.delete_node_pool(name=POOL))
    spot = gpu_pool_spec()
    spot.config.spot = True
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=spot)).error.code == 0
    reserved = gpu_pool_spec("reserved-pool")
    reserved.config.reservation_affinity = T.ReservationAffinity(
        consume_reservation_type=T.ReservationAffinity.Type.SPECIFIC_RESERVATION,
        key="compute.googleapis.com/reservation-name", values=["a3-reservation"])
    assert wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=reserved)).error.code == 0

"""ensure_gpu_node_pool / delete_gpu_node_pool against the sandbox GKE API (official client, real HTTP)."""

from __future__ import annotations

import pytest

from blocks.errors import DriftError, NotOursError, Stockout
from blocks.labels import LEASE_EXPIRY_KEY, owner_labels
from blocks.spec import CapacityMode
from sandbox.testing import pool_inventory
from tasks.cluster import cluster_ref, ensure_cluster
from tasks.node_pool import delete_gpu_node_pool, desired_node_pool, ensure_gpu_node_pool
from tests.integration.gke_support import (
    connect,
    gke_requests,
    gpu_vms_billing,
    make_spec,
    next_seq,
    writes,
)

POOL = "gpu-node-pool"


@pytest.fixture
def spec(sandbox):
    return make_spec(sandbox, gpu_pool={"fallback_zones": ["us-east5-b"]})


@pytest.fixture
def gke(spec, clock):
    gateway = connect(spec, clock)
    ensure_cluster.fn(gateway, spec, clock=clock)
    return gateway


def _pool_path(spec, suffix=""):
    return f"/{cluster_ref(spec).node_pool_path(POOL)}{suffix}".replace("/projects", "/v1/projects", 1)


def test_an_absent_pool_is_created_through_v1beta1_with_the_host_maintenance_interval(sandbox, spec, gke, clock):
    since = next_seq(sandbox)
    result = ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert result.steps[0].startswith("created in ['us-east5-a'] as on-demand")
    posts = [e for e in gke_requests(sandbox, spec.cluster.name, since=since) if e["method"] == "POST"]
    assert [e["path"] for e in posts] == [f"/v1beta1/{cluster_ref(spec).path}/nodePools"]
    config = posts[0]["body"]["nodePool"]["config"]
    assert config["hostMaintenancePolicy"] == {"maintenanceInterval": "PERIODIC"}
    assert config["resourceLabels"] == owner_labels("llm")
    pool = pool_inventory(sandbox, spec.cluster.name, POOL)
    assert pool["status"] == "RUNNING" and pool["gpus_per_node"] == 8 and len(pool["nodes"]) == 2


def test_without_a_host_maintenance_interval_the_pool_goes_through_v1(sandbox, gke, clock):
    spec = make_spec(sandbox, gpu_pool={"host_maintenance_interval": None})
    gke = connect(spec, clock)
    ensure_cluster.fn(gke, spec, clock=clock)
    since = next_seq(sandbox)
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == [f"POST /v1/{cluster_ref(spec).path}/nodePools"]


def test_a_second_ensure_makes_no_write(sandbox, spec, gke, clock):
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    since = next_seq(sandbox)
    result = ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert not result.changed
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_a_renewed_lease_is_one_label_update(sandbox, spec, gke, clock):
    ensure_gpu_node_pool.fn(gke, spec, clock=clock, lease_expiry_epoch_s=100, run_id="run-1")
    since = next_seq(sandbox)
    result = ensure_gpu_node_pool.fn(gke, spec, clock=clock, lease_expiry_epoch_s=200, run_id="run-1")
    assert result.steps[0] == f"updated config.resource_labels.{LEASE_EXPIRY_KEY}"
    assert writes(sandbox, spec.cluster.name, since=since) == [f"PUT {_pool_path(spec)}"]
    labels = pool_inventory(sandbox, spec.cluster.name, POOL)["resource_labels"]
    assert labels == owner_labels("llm", lease_expiry_epoch_s=200, run_id="run-1")


def test_a_pool_in_another_zone_is_immutable_drift_and_nothing_is_written(sandbox, spec, gke, clock):
    ensure_gpu_node_pool.fn(gke, spec, clock=clock, zone="us-east5-b")
    since = next_seq(sandbox)
    with pytest.raises(DriftError, match=r"locations: live \['us-east5-b'\], spec \['us-east5-a'\].*Delete the pool"):
        ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_a_busy_cluster_is_retried_until_the_create_goes_through(sandbox, spec, gke, clock):
    sandbox.inject({"kind": "busy_cluster", "cluster": spec.cluster.name, "times": 3})
    since = next_seq(sandbox)
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    answers = [e["status"] for e in gke_requests(sandbox, spec.cluster.name, since=since) if e["method"] == "POST"]
    assert answers == [400, 400, 400, 200]
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"


def test_a_pool_left_in_error_by_a_stockout_is_deleted_and_recreated(sandbox, spec, gke, clock):
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "zone": "us-east5-a", "times": 1,
                    "created": 1})
    with pytest.raises(Stockout, match="us-east5-a.*does not have enough resources"):
        ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "ERROR"
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 1            # the partial VM bills meanwhile
    since = next_seq(sandbox)
    result = ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert result.steps[0].startswith("deleted the pool in error") and result.steps[1].startswith("created")
    assert [w.split()[0] for w in writes(sandbox, spec.cluster.name, since=since)] == ["DELETE", "POST"]
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"


def test_a_crash_between_create_and_wait_is_finished_by_the_rerun(sandbox, spec, gke, clock):
    pool = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    operation = gke.create_node_pool(cluster_ref(spec), pool, host_maintenance_interval="PERIODIC")
    since = next_seq(sandbox)
    result = ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert result.steps[0] == f"waited for {operation.name} (PROVISIONING: being created)"
    assert writes(sandbox, spec.cluster.name, since=since) == []
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"


def _foreign_pool(gke, spec, labels, clock):
    pool = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    pool.config.resource_labels.clear()
    pool.config.resource_labels.update(labels)
    gke.create_node_pool(cluster_ref(spec), pool)


@pytest.mark.parametrize("labels", [{}, owner_labels("other-stack")], ids=["unlabelled", "other-stack"])
def test_a_foreign_pool_is_never_replaced_or_deleted(sandbox, spec, gke, clock, labels):
    _foreign_pool(gke, spec, labels, clock)
    since = next_seq(sandbox)
    with pytest.raises(NotOursError):
        ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    with pytest.raises(NotOursError):
        delete_gpu_node_pool.fn(gke, spec, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []
    assert pool_inventory(sandbox, spec.cluster.name, POOL) is not None


def test_delete_waits_until_the_pool_and_its_bill_are_gone_and_repeats_as_a_no_op(sandbox, spec, gke, clock):
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 2
    assert delete_gpu_node_pool.fn(gke, spec, clock=clock) is True
    assert pool_inventory(sandbox, spec.cluster.name, POOL) is None
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 0
    since = next_seq(sandbox)
    assert delete_gpu_node_pool.fn(gke, spec, clock=clock) is False
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_delete_without_a_cluster_is_success(sandbox, clock):
    spec = make_spec(sandbox)
    assert delete_gpu_node_pool.fn(connect(spec, clock), spec, clock=clock) is False


def test_a_pool_create_right_after_the_cluster_create_retries_through_gke_s_own_upgrade(sandbox, clock):
    from tasks.cluster import desired_cluster
    from tasks.gke_operations import wait_for_gke_operation

    spec = make_spec(sandbox)
    gke = connect(spec, clock)
    sandbox.inject({"kind": "auto_upgrade", "cluster": spec.cluster.name, "duration_s": 900, "times": 1})
    created = gke.create_cluster(cluster_ref(spec), desired_cluster(spec))
    wait_for_gke_operation(gke, cluster_ref(spec), created, what="create", timeout_s=6 * 3600, clock=clock)
    since = next_seq(sandbox)
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    answers = [e["status"] for e in gke_requests(sandbox, spec.cluster.name, since=since) if e["method"] == "POST"]
    assert answers[0] == 400 and answers[-1] == 200              # busy while upgrading, then created
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"

"""ensure_cluster / delete_cluster against the sandbox GKE API (official client, real HTTP)."""

from __future__ import annotations

import pytest
from google.cloud.container_v1 import types as T

from blocks.errors import DriftError, NotOursError, Stockout
from blocks.labels import LEASE_EXPIRY_KEY, owner_labels
from tasks.cluster import cluster_ref, delete_cluster, desired_cluster, ensure_cluster
from tests.integration.gke_support import (
    cluster_inventory,
    connect,
    gke_requests,
    make_spec,
    next_seq,
    writes,
)


@pytest.fixture
def spec(sandbox):
    return make_spec(sandbox)


@pytest.fixture
def gke(spec, clock):
    return connect(spec, clock)


def test_an_absent_cluster_is_created_with_owner_labels_and_waited_for(sandbox, spec, gke, clock):
    result = ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=1_900_000_000, run_id="run-1")
    live = cluster_inventory(sandbox, spec.cluster.name)
    assert live["status"] == "RUNNING"
    assert live["resource_labels"] == owner_labels("llm", lease_expiry_epoch_s=1_900_000_000, run_id="run-1")
    assert result.changed and result.steps[0].startswith("created")
    assert writes(sandbox, spec.cluster.name) == [
        "POST /v1/projects/sandbox-project/locations/us-east5-a/clusters"]


def test_a_second_ensure_makes_no_write(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    since = next_seq(sandbox)
    result = ensure_cluster.fn(gke, spec, clock=clock)
    assert not result.changed and result.steps == ("unchanged: RUNNING and matching the spec",)
    assert writes(sandbox, spec.cluster.name, since=since) == []
    assert gke_requests(sandbox, spec.cluster.name, since=since)     # it did look


def test_a_renewed_lease_is_one_label_update_keeping_other_labels(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=100)
    since = next_seq(sandbox)
    result = ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=200)
    assert result.steps[0] == f"updated resource_labels.{LEASE_EXPIRY_KEY}"
    assert writes(sandbox, spec.cluster.name, since=since) == [
        f"POST /v1/{cluster_ref(spec).path}:setResourceLabels"]
    assert cluster_inventory(sandbox, spec.cluster.name)["resource_labels"][LEASE_EXPIRY_KEY] == "200"


def test_immutable_drift_fails_saying_what_differs_and_writes_nothing(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    drifted = spec.updated({"cluster": {"machine_type": "e2-standard-8"}})
    since = next_seq(sandbox)
    with pytest.raises(DriftError, match=r"machine_type: live 'e2-standard-16', spec 'e2-standard-8'"):
        ensure_cluster.fn(gke, drifted, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_a_crash_between_create_and_wait_is_finished_by_the_rerun(sandbox, spec, gke, clock):
    # The first run sent the create and died before waiting: the cluster is PROVISIONING.
    operation = gke.create_cluster(cluster_ref(spec), desired_cluster(spec))
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "PROVISIONING"
    result = ensure_cluster.fn(gke, spec, clock=clock)
    assert result.steps[0] == f"waited for {operation.name} (PROVISIONING: being created)"
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "RUNNING"
    assert len(writes(sandbox, spec.cluster.name)) == 1               # the one create, never a second


def test_a_cluster_being_deleted_is_waited_for_then_created_again(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    gke.delete_cluster(cluster_ref(spec))                              # someone's teardown is in flight
    result = ensure_cluster.fn(gke, spec, clock=clock)
    assert [s.split(" (")[0] for s in result.steps[:2]] == ["waited for " + result.steps[0].split()[2], "created"]
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "RUNNING"


def test_a_cluster_in_error_is_deleted_and_recreated(sandbox, gke, clock):
    # A GPU default pool lets the sandbox stock the cluster create out, leaving the cluster in ERROR.
    spec = make_spec(sandbox, cluster={"machine_type": "a3-highgpu-8g"})
    gke = connect(spec, clock)
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "times": 1})
    with pytest.raises(Stockout, match="GCE_STOCKOUT"):
        ensure_cluster.fn(gke, spec, clock=clock)
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "ERROR"
    result = ensure_cluster.fn(gke, spec, clock=clock)
    assert result.steps[0].startswith("deleted the cluster in ERROR") and result.steps[1].startswith("created")
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "RUNNING"


def _foreign_cluster(gke, spec, labels):
    cluster = desired_cluster(spec)
    cluster.resource_labels.clear()
    cluster.resource_labels.update(labels)
    op = gke.create_cluster(cluster_ref(spec), cluster)
    return op


def test_an_unlabelled_cluster_is_refused_and_never_deleted(sandbox, spec, gke, clock):
    _foreign_cluster(gke, spec, {"team": "research"})
    since = next_seq(sandbox)
    with pytest.raises(NotOursError, match="without our owner labels"):
        ensure_cluster.fn(gke, spec, clock=clock)
    with pytest.raises(NotOursError):
        delete_cluster.fn(gke, spec, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []
    assert cluster_inventory(sandbox, spec.cluster.name) is not None


def test_an_unlabelled_cluster_is_adopted_when_allowed_but_still_never_deleted(sandbox, spec, gke, clock):
    op = _foreign_cluster(gke, spec, {"team": "research"})
    from tasks.gke_operations import wait_for_gke_operation
    wait_for_gke_operation(gke, cluster_ref(spec), op, what="setup", timeout_s=3600, clock=clock)
    adopting = spec.updated({"cluster": {"adopt_existing": True}})
    since = next_seq(sandbox)
    result = ensure_cluster.fn(gke, adopting, clock=clock)
    assert result.steps == ("unchanged: adopted (no owner labels), RUNNING",)
    with pytest.raises(NotOursError):
        delete_cluster.fn(gke, adopting, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []
    assert cluster_inventory(sandbox, spec.cluster.name)["resource_labels"] == {"team": "research"}


def test_a_cluster_of_another_stack_is_never_touched_even_with_adopt_existing(sandbox, spec, gke, clock):
    _foreign_cluster(gke, spec, owner_labels("other-stack"))
    adopting = spec.updated({"cluster": {"adopt_existing": True}})
    since = next_seq(sandbox)
    with pytest.raises(NotOursError, match="belongs to stack 'other-stack'"):
        ensure_cluster.fn(gke, adopting, clock=clock)
    with pytest.raises(NotOursError, match="other-stack"):
        delete_cluster.fn(gke, adopting, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_delete_waits_until_gone_and_a_second_delete_is_a_no_op(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    assert delete_cluster.fn(gke, spec, clock=clock) is True
    assert cluster_inventory(sandbox, spec.cluster.name) is None
    since = next_seq(sandbox)
    assert delete_cluster.fn(gke, spec, clock=clock) is False
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_delete_of_a_cluster_already_being_deleted_waits_for_that_delete(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    gke.delete_cluster(cluster_ref(spec))
    since = next_seq(sandbox)
    assert delete_cluster.fn(gke, spec, clock=clock) is True
    assert cluster_inventory(sandbox, spec.cluster.name) is None
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_the_created_cluster_is_what_the_spec_renders(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock)
    live = gke.get_cluster(cluster_ref(spec))
    assert live.status == T.Cluster.Status.RUNNING and live.endpoint
    assert [p.config.machine_type for p in live.node_pools] == ["e2-standard-16"]
    assert live.node_pool_defaults.node_config_defaults.gcfs_config.enabled


def test_list_clusters_finds_ours_by_its_labels(sandbox, spec, gke, clock):
    ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=123)
    listed = {c.name: dict(c.resource_labels) for c in gke.list_clusters("sandbox-project", "us-east5-a")}
    assert listed[spec.cluster.name] == owner_labels("llm", lease_expiry_epoch_s=123)


def test_gke_s_own_upgrade_right_after_create_is_waited_out(sandbox, spec, gke, clock):
    sandbox.inject({"kind": "auto_upgrade", "cluster": spec.cluster.name, "duration_s": 600, "times": 1})
    result = ensure_cluster.fn(gke, spec, clock=clock)
    assert result.steps[0].startswith("created")
    assert result.steps[1].startswith("waited for") and "RECONCILING" in result.steps[1]
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "RUNNING"
    assert len(writes(sandbox, spec.cluster.name)) == 1

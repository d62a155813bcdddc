"""Pure planners of the GKE tasks: what ensure_cluster / ensure_gpu_node_pool / capacity decide."""

from __future__ import annotations

import pytest
from google.cloud.container_v1 import types as T

from blocks.errors import DriftError, NotOursError, OperationFailed
from blocks.labels import owner_labels
from blocks.spec import CapacityMode, StackSpec
from tasks.capacity import Placement, placement_of, plan_placements
from tasks.cluster import desired_cluster, frozen_cluster_drift, plan_cluster
from tasks.gke_operations import Action, describe_operation
from tasks.node_pool import capacity_mode_of, desired_node_pool, plan_node_pool


@pytest.fixture
def spec() -> StackSpec:
    return StackSpec(name="llm", cluster={"project": "proj-1", "location": "us-east5-a"},
                     gpu_pool={"fallback_zones": ["us-east5-b", "us-east5-c"],
                               "capacity_modes": ["reservation", "on-demand", "spot"],
                               "reservation_name": "h100-res"})


def _live_cluster(desired: T.Cluster, status=T.Cluster.Status.RUNNING, **changes) -> T.Cluster:
    live = T.Cluster(desired)
    live.status = status
    live.network, live.subnetwork = "default", "default"
    for key, value in changes.items():
        setattr(live, key, value)
    return live


def _live_pool(desired: T.NodePool, status=T.NodePool.Status.RUNNING) -> T.NodePool:
    live = T.NodePool(desired)
    live.status = status
    return live


# -- cluster ---------------------------------------------------------------------------------------
def test_an_absent_cluster_is_created(spec):
    assert plan_cluster(None, desired_cluster(spec), stack="llm", adopt_existing=False).action is Action.CREATE


def test_a_running_cluster_matching_the_spec_needs_nothing(spec):
    desired = desired_cluster(spec)
    assert plan_cluster(_live_cluster(desired), desired, stack="llm", adopt_existing=False).action is Action.NOOP


def test_extra_labels_on_the_live_cluster_are_not_drift(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired)
    live.resource_labels["added-by-someone"] = "x"
    assert plan_cluster(live, desired, stack="llm", adopt_existing=False).action is Action.NOOP


@pytest.mark.parametrize("status", [T.Cluster.Status.PROVISIONING, T.Cluster.Status.RECONCILING,
                                    T.Cluster.Status.STOPPING])
def test_a_busy_cluster_is_waited_for(spec, status):
    desired = desired_cluster(spec)
    plan = plan_cluster(_live_cluster(desired, status), desired, stack="llm", adopt_existing=False)
    assert plan.action is Action.WAIT and status.name in plan.reason


def test_a_cluster_in_error_is_recreated(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired, T.Cluster.Status.ERROR, status_message="GCE_STOCKOUT")
    plan = plan_cluster(live, desired, stack="llm", adopt_existing=False)
    assert plan.action is Action.RECREATE and "GCE_STOCKOUT" in plan.reason


def test_a_renewed_lease_label_is_an_update_of_labels_only(spec):
    live = _live_cluster(desired_cluster(spec, lease_expiry_epoch_s=100))
    plan = plan_cluster(live, desired_cluster(spec, lease_expiry_epoch_s=200), stack="llm", adopt_existing=False)
    assert plan.action is Action.UPDATE and plan.diff == ("resource_labels.gke-llm-flows-lease-expiry",)


def test_a_different_default_pool_machine_type_is_immutable_drift_naming_both_values(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired)
    live.node_pools[0].config.machine_type = "e2-standard-8"
    with pytest.raises(DriftError, match=r"machine_type: live 'e2-standard-8', spec 'e2-standard-16'.*delete"):
        plan_cluster(live, desired, stack="llm", adopt_existing=False)


def test_network_and_image_streaming_drift_are_reported_together(spec):
    desired = desired_cluster(spec.updated({"cluster": {"network": "vpc-a", "image_streaming": True}}))
    live = _live_cluster(desired, network="vpc-b")
    live.node_pool_defaults.node_config_defaults.gcfs_config.enabled = False
    assert set(frozen_cluster_drift(live, desired)) == {"network", "image_streaming"}


def test_a_cluster_of_another_stack_is_never_touched(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired, resource_labels=owner_labels("other-stack"))
    with pytest.raises(NotOursError, match="other-stack"):
        plan_cluster(live, desired, stack="llm", adopt_existing=True)


def test_an_unlabelled_cluster_is_refused_unless_adoption_is_allowed(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired, resource_labels={"team": "ml"})
    with pytest.raises(NotOursError, match="adopt|without our owner labels"):
        plan_cluster(live, desired, stack="llm", adopt_existing=False)
    plan = plan_cluster(live, desired, stack="llm", adopt_existing=True)
    assert plan.action is Action.NOOP and "adopted" in plan.reason


def test_an_adopted_cluster_in_error_is_never_deleted(spec):
    desired = desired_cluster(spec)
    live = _live_cluster(desired, T.Cluster.Status.ERROR, resource_labels={})
    with pytest.raises(OperationFailed, match="do not own"):
        plan_cluster(live, desired, stack="llm", adopt_existing=True)


# -- node pool -------------------------------------------------------------------------------------
def test_pool_absent_running_busy_and_broken(spec):
    desired = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    S = T.NodePool.Status
    assert plan_node_pool(None, desired, stack="llm").action is Action.CREATE
    assert plan_node_pool(_live_pool(desired), desired, stack="llm").action is Action.NOOP
    assert plan_node_pool(_live_pool(desired, S.PROVISIONING), desired, stack="llm").action is Action.WAIT
    assert plan_node_pool(_live_pool(desired, S.ERROR), desired, stack="llm").action is Action.RECREATE
    assert plan_node_pool(_live_pool(desired, S.RUNNING_WITH_ERROR), desired, stack="llm").action is Action.RECREATE


def test_a_pool_in_another_zone_or_capacity_mode_is_immutable_drift(spec):
    live = _live_pool(desired_node_pool(spec, zone="us-east5-b", capacity_mode=CapacityMode.SPOT))
    desired = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    with pytest.raises(DriftError) as caught:
        plan_node_pool(live, desired, stack="llm")
    assert "locations: live ['us-east5-b'], spec ['us-east5-a']" in str(caught.value)
    assert "capacity_mode: live 'spot', spec 'on-demand'" in str(caught.value)
    assert "delete_gpu_node_pool" in str(caught.value)


def test_a_pool_with_a_stale_lease_label_gets_a_label_update(spec):
    live = _live_pool(desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND,
                                        lease_expiry_epoch_s=1))
    desired = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND,
                                lease_expiry_epoch_s=2)
    assert plan_node_pool(live, desired, stack="llm").action is Action.UPDATE


def test_an_unlabelled_or_foreign_pool_is_refused_even_in_error(spec):
    desired = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    foreign = _live_pool(desired, T.NodePool.Status.ERROR)
    foreign.config.resource_labels.clear()
    with pytest.raises(NotOursError):
        plan_node_pool(foreign, desired, stack="llm")
    foreign.config.resource_labels.update(owner_labels("someone-else"))
    with pytest.raises(NotOursError, match="someone-else"):
        plan_node_pool(foreign, desired, stack="llm")


@pytest.mark.parametrize("mode", list(CapacityMode))
def test_capacity_mode_round_trips_through_the_rendered_pool(mode):
    spec = StackSpec(name="llm", cluster={"project": "proj-1"},
                     gpu_pool={"capacity_modes": [mode.value],
                               "reservation_name": "r" if mode is CapacityMode.RESERVATION else None})
    assert capacity_mode_of(desired_node_pool(spec, zone="us-east5-a", capacity_mode=mode)) is mode


# -- capacity --------------------------------------------------------------------------------------
def test_placements_go_mode_by_mode_across_every_zone(spec):
    assert [str(p) for p in plan_placements(spec)] == [
        "reservation in us-east5-a", "reservation in us-east5-b", "reservation in us-east5-c",
        "on-demand in us-east5-a", "on-demand in us-east5-b", "on-demand in us-east5-c",
        "spot in us-east5-a", "spot in us-east5-b", "spot in us-east5-c"]


def test_a_rerun_resumes_at_the_placement_a_healthy_pool_already_has(spec):
    placements = plan_placements(spec)
    landed = _live_pool(desired_node_pool(spec, zone="us-east5-c", capacity_mode=CapacityMode.ON_DEMAND))
    assert placements[placement_of(landed, placements)] == Placement("us-east5-c", CapacityMode.ON_DEMAND)
    broken = _live_pool(desired_node_pool(spec, zone="us-east5-c", capacity_mode=CapacityMode.ON_DEMAND),
                        T.NodePool.Status.ERROR)
    assert placement_of(broken, placements) == 0
    assert placement_of(None, placements) == 0


def test_operation_description_carries_status_message_and_progress():
    op = T.Operation(name="operation-1", status=T.Operation.Status.RUNNING, detail="Creating nodes",
                     progress=T.OperationProgress(metrics=[T.OperationProgress.Metric(name="NODES_DONE",
                                                                                      int_value=1)]))
    assert describe_operation(op) == "RUNNING, NODES_DONE=1, Creating nodes"


def test_settings_gke_turns_on_by_itself_are_not_pool_drift(spec):
    desired = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    live = _live_pool(desired)
    live.config.gvnic.enabled = True                       # GKE enables gVNIC on A3 machines itself
    assert plan_node_pool(live, desired, stack="llm").action is Action.NOOP
    wants_gvnic = desired_node_pool(spec.updated({"gpu_pool": {"gvnic": True}}), zone="us-east5-a",
                                    capacity_mode=CapacityMode.ON_DEMAND)
    with pytest.raises(DriftError, match="gvnic: live False, spec True"):
        plan_node_pool(_live_pool(desired), wants_gvnic, stack="llm")


def test_operations_are_matched_to_their_target_in_either_link_form():
    from tasks.gke_operations import _targets

    def op(link):
        return T.Operation(name="operation-1", target_link=link)
    pool = "projects/p/locations/us-east5-a/clusters/c/nodePools/gpu"
    cluster = "projects/p/locations/us-east5-a/clusters/c"
    zonal = "https://container.googleapis.com/v1/projects/p/zones/us-east5-a/clusters/c/nodePools/gpu"
    assert _targets(op(zonal), pool, include_children=False)
    assert not _targets(op(zonal), cluster, include_children=False)
    assert _targets(op(zonal), cluster, include_children=True)
    assert not _targets(op(zonal.replace("/clusters/c/", "/clusters/c2/")), cluster, include_children=True)

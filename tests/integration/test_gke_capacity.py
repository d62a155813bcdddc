"""ensure_gpu_capacity: stockout and quota fallback across zones and capacity modes, against the sandbox."""

from __future__ import annotations

import pytest

from blocks.errors import CapacityError, DriftError
from blocks.spec import CapacityMode
from sandbox.testing import pool_inventory
from tasks.capacity import CapacityExhausted, Placement, ensure_gpu_capacity
from tasks.cluster import ensure_cluster
from tasks.node_pool import ensure_gpu_node_pool
from tests.integration.gke_support import connect, gpu_vms_billing, make_spec, next_seq, writes

POOL = "gpu-node-pool"


def _stack(sandbox, clock, **gpu_pool):
    spec = make_spec(sandbox, gpu_pool={"fallback_zones": ["us-east5-b", "us-east5-c"], **gpu_pool})
    gke = connect(spec, clock)
    ensure_cluster.fn(gke, spec, clock=clock)
    return spec, gke


def test_a_stockout_in_the_first_zone_lands_the_pool_in_the_second(sandbox, clock):
    spec, gke = _stack(sandbox, clock)
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "zone": "us-east5-a", "created": 1})
    result = ensure_gpu_capacity.fn(gke, spec, clock=clock)
    assert result.placement == Placement("us-east5-b", CapacityMode.ON_DEMAND)
    assert [(str(a.placement), a.outcome) for a in result.attempts] == [
        ("on-demand in us-east5-a", "Stockout"), ("on-demand in us-east5-b", "running")]
    assert "GCE_STOCKOUT" in result.attempts[0].reason
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"
    assert list(result.pool.live.locations) == ["us-east5-b"]
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 2              # the failed zone's VM is gone
    # The failed pool was deleted before the second create: POST, DELETE, POST.
    assert [w.split()[0] for w in writes(sandbox, spec.cluster.name) if "nodePools" in w] == \
        ["POST", "DELETE", "POST"]


def test_a_rerun_after_a_fallback_keeps_the_pool_where_it_landed_without_writes(sandbox, clock):
    spec, gke = _stack(sandbox, clock)
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "zone": "us-east5-a", "times": 1})
    ensure_gpu_capacity.fn(gke, spec, clock=clock)
    since = next_seq(sandbox)
    again = ensure_gpu_capacity.fn(gke, spec, clock=clock)
    assert again.placement == Placement("us-east5-b", CapacityMode.ON_DEMAND)
    assert [a.outcome for a in again.attempts] == ["running"]
    assert writes(sandbox, spec.cluster.name, since=since) == []


def test_stockout_everywhere_fails_once_listing_every_attempt_with_nothing_billing(sandbox, clock):
    spec, gke = _stack(sandbox, clock, capacity_modes=["on-demand", "spot"])
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "created": 1})
    with pytest.raises(CapacityExhausted) as caught:
        ensure_gpu_capacity.fn(gke, spec, clock=clock, budget_s=3 * 3600)
    message = str(caught.value)
    for placement in ("on-demand in us-east5-a", "on-demand in us-east5-b", "on-demand in us-east5-c",
                      "spot in us-east5-a", "spot in us-east5-b", "spot in us-east5-c"):
        assert f"{placement}: Stockout" in message
    assert "nothing is left running" in message and isinstance(caught.value, CapacityError)
    assert len(caught.value.attempts) == 6
    assert pool_inventory(sandbox, spec.cluster.name, POOL) is None
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 0


def test_a_quota_shortfall_on_one_attempt_falls_back_to_the_next_mode(sandbox, clock):
    spec, gke = _stack(sandbox, clock, capacity_modes=["spot", "on-demand"], fallback_zones=[])
    sandbox.inject({"kind": "quota", "cluster": spec.cluster.name, "metric": "NVIDIA_H100_GPUS",
                    "limit": 8, "times": 1})
    result = ensure_gpu_capacity.fn(gke, spec, clock=clock)
    assert [(str(a.placement), a.outcome) for a in result.attempts][-1] == ("on-demand in us-east5-a", "running")
    assert result.attempts[0].outcome == "QuotaExceeded" and "Insufficient regional quota" in result.attempts[0].reason


def test_the_time_budget_bounds_the_search_and_leaves_nothing_behind(sandbox, clock):
    spec, gke = _stack(sandbox, clock)
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name})
    # A stockout surfaces after ~10 simulated minutes; a 15-minute budget allows at most two attempts.
    with pytest.raises(CapacityExhausted, match="time budget spent|every zone") as caught:
        ensure_gpu_capacity.fn(gke, spec, clock=clock, budget_s=15 * 60)
    assert len(caught.value.attempts) < 3
    assert pool_inventory(sandbox, spec.cluster.name, POOL) is None


def test_a_pool_running_somewhere_the_spec_no_longer_allows_is_drift_not_a_silent_move(sandbox, clock):
    spec, gke = _stack(sandbox, clock)
    ensure_gpu_node_pool.fn(gke, spec, clock=clock, zone="us-east5-c")
    narrowed = spec.updated({"gpu_pool": {"fallback_zones": ["us-east5-b"]}})
    since = next_seq(sandbox)
    with pytest.raises(DriftError, match="us-east5-c"):
        ensure_gpu_capacity.fn(gke, narrowed, clock=clock)
    assert writes(sandbox, spec.cluster.name, since=since) == []



def test_an_on_demand_stockout_in_every_zone_falls_back_to_spot_in_the_first(sandbox, clock):
    spec, gke = _stack(sandbox, clock, capacity_modes=["on-demand", "spot"], fallback_zones=["us-east5-b"])
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "capacity": "on-demand"})
    result = ensure_gpu_capacity.fn(gke, spec, clock=clock)
    assert [(str(a.placement), a.outcome) for a in result.attempts] == [
        ("on-demand in us-east5-a", "Stockout"), ("on-demand in us-east5-b", "Stockout"),
        ("spot in us-east5-a", "running")]
    assert result.pool.live.config.spot

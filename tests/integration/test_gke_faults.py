"""The operation waiter and the gateway's retries under injected faults, against the sandbox."""

from __future__ import annotations

import logging

import pytest

from blocks.errors import Stockout, WaitTimedOut
from blocks.spec import CapacityMode
from sandbox.testing import pool_inventory, running_sandbox
from tasks.capacity import ensure_gpu_capacity
from tasks.clock import ScaledClock
from tasks.cluster import cluster_ref, delete_cluster, ensure_cluster
from tasks.gke_operations import wait_for_gke_operation
from tasks.node_pool import delete_gpu_node_pool, desired_node_pool, ensure_gpu_node_pool
from tests.integration.gke_support import (
    TIME_SCALE,
    cluster_inventory,
    connect,
    gke_requests,
    gpu_vms_billing,
    make_spec,
    next_seq,
)

POOL = "gpu-node-pool"


@pytest.fixture
def sandbox():
    with running_sandbox(time_scale=TIME_SCALE, seed=7) as sandbox:
        yield sandbox


@pytest.fixture
def clock():
    return ScaledClock(TIME_SCALE)


@pytest.fixture
def stack(sandbox, clock):
    spec = make_spec(sandbox, gpu_pool={"fallback_zones": ["us-east5-b"]})
    gke = connect(spec, clock)
    ensure_cluster.fn(gke, spec, clock=clock)
    return spec, gke


def _start_pool(spec, gke):
    pool = desired_node_pool(spec, zone="us-east5-a", capacity_mode=CapacityMode.ON_DEMAND)
    return gke.create_node_pool(cluster_ref(spec), pool)


# -- the waiter ------------------------------------------------------------------------------------
def test_waiter_returns_the_done_operation_and_logs_each_status_change_once(stack, clock, caplog):
    spec, gke = stack
    caplog.set_level(logging.INFO, logger="tasks.gke_operations")
    op = wait_for_gke_operation(gke, cluster_ref(spec), _start_pool(spec, gke), what="create pool",
                                timeout_s=3600, clock=clock)
    assert op.status.name == "DONE"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("create pool")]
    statuses = [line.split(op.name)[1].split()[0] for line in lines]
    assert statuses == ["PENDING", "RUNNING", "done"]            # one line per change, not per poll


def test_waiter_fails_fast_on_a_stockout_long_before_its_deadline(sandbox, stack, clock):
    spec, gke = stack
    sandbox.inject({"kind": "stockout", "cluster": spec.cluster.name, "times": 1})
    started = clock.monotonic()
    with pytest.raises(Stockout, match="GCE_STOCKOUT"):
        wait_for_gke_operation(gke, cluster_ref(spec), _start_pool(spec, gke), what="create pool",
                               timeout_s=6 * 3600, clock=clock)
    assert clock.monotonic() - started < 3600                     # the sandbox reports it after ~10 min


def test_waiter_times_out_with_the_last_status_and_what_to_do(stack, clock):
    spec, gke = stack
    with pytest.raises(WaitTimedOut, match=r"not done after 60s; last seen: (PENDING|RUNNING).*rerun"):
        wait_for_gke_operation(gke, cluster_ref(spec), _start_pool(spec, gke), what="create pool",
                               timeout_s=60, clock=clock)


def test_waiter_rides_out_transient_read_errors(sandbox, stack, clock):
    spec, gke = stack
    op = _start_pool(spec, gke)
    sandbox.inject({"kind": "transient", "path": "/v1/projects/sandbox-project/locations/us-east5-a/operations/",
                    "method": "GET", "status": 503, "times": 4})
    assert wait_for_gke_operation(gke, cluster_ref(spec), op, what="create pool", timeout_s=3600,
                                  clock=clock).status.name == "DONE"
    assert [e["status"] for e in sandbox.requests() if "/operations/" in e["path"]].count(503) == 4


# -- the whole lifecycle under 30% transient faults --------------------------------------------------
def test_thirty_percent_transient_faults_still_converge_without_duplicates_or_leaks(sandbox, clock):
    spec = make_spec(sandbox, gpu_pool={"fallback_zones": ["us-east5-b"]})
    gke = connect(spec, clock)
    since = next_seq(sandbox)
    sandbox.inject({"kind": "transient", "rate": 0.3, "status": 503})
    sandbox.inject({"kind": "transient", "rate": 0.1, "status": 429})
    sandbox.inject({"kind": "transient", "rate": 0.1, "status": 500, "applied": True})  # answer lost
    ensure_cluster.fn(gke, spec, clock=clock)
    ensure_gpu_capacity.fn(gke, spec, clock=clock)
    ensure_cluster.fn(gke, spec, clock=clock)
    ensure_gpu_node_pool.fn(gke, spec, clock=clock)
    assert cluster_inventory(sandbox, spec.cluster.name)["status"] == "RUNNING"
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"
    assert len(sandbox.inventory()["clusters"]) == 1
    answers = [e["status"] for e in gke_requests(sandbox, spec.cluster.name, since=since)]
    assert {429, 500, 503} <= set(answers)                       # the faults really fired
    delete_gpu_node_pool.fn(gke, spec, clock=clock)
    delete_cluster.fn(gke, spec, clock=clock)
    assert cluster_inventory(sandbox, spec.cluster.name) is None
    assert gpu_vms_billing(sandbox, spec.cluster.name) == 0
    sandbox.clear_faults()
    # Retried creates whose first answer was lost met 409 and adopted what was there: one of each.
    created = [op.operation_type.name for op in gke.list_operations(cluster_ref(spec))
               if op.operation_type.name.startswith("CREATE")]
    assert sorted(created) == ["CREATE_CLUSTER", "CREATE_NODE_POOL"]



def test_a_create_whose_answer_times_out_is_retried_without_a_duplicate(sandbox, stack, clock):
    from sandbox.testing import wait_for
    from tasks.gateways.gke import CallTimeouts, GkeGateway, RetryPolicy
    from tasks.gke_credentials import gke_credentials

    spec, _ = stack
    impatient = GkeGateway.connect(gke_credentials(None, api_endpoint=spec.cluster.api_endpoint),
                                   api_endpoint=spec.cluster.api_endpoint, clock=clock,
                                   retry=RetryPolicy(budget_s=6 * 3600), timeouts=CallTimeouts(read_s=5, write_s=0.5))
    sandbox.inject({"kind": "slow_response", "method": "POST", "path": "/v1beta1/", "delay_s": 1.5, "times": 1})
    since = next_seq(sandbox)
    ensure_gpu_node_pool.fn(impatient, spec, clock=clock)
    assert pool_inventory(sandbox, spec.cluster.name, POOL)["status"] == "RUNNING"

    def both_answered():
        posts = [e["status"] for e in gke_requests(sandbox, spec.cluster.name, since=since) if e["method"] == "POST"]
        return len(posts) == 2 and None not in posts and sorted(posts)
    # The retry created the pool; the slow original landed afterwards and met 409: one pool, one create.
    assert wait_for(both_answered, timeout_s=10, what="both POSTs answered") == [200, 409]
    creates = [op for op in impatient.list_operations(cluster_ref(spec))
               if op.operation_type.name == "CREATE_NODE_POOL"]
    assert len(creates) == 1

"""Pure pieces of the flows layer: the stack reference, the janitor's judgement, timeline and cost."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from blocks.labels import owner_labels
from blocks.spec import StackSpec
from flows.janitor import judge
from flows.stack_ref import StackRef
from flows.summary import estimate_cost, timeline_table
from flows.timeline import Timeline
from tasks.clock import TIME_SCALE_ENV, ScaledClock, SystemClock, clock_from_env

SPEC = StackSpec(cluster={"project": "my-project", "location": "us-east5-a"})


@pytest.mark.parametrize("fields", [{}, {"block_name": "a", "file": "b.yaml"}])
def test_a_stack_reference_needs_exactly_one_of_block_or_file(fields):
    with pytest.raises(ValidationError, match="exactly one of block_name"):
        StackRef(**fields)


@pytest.mark.parametrize("fields, field", [({"block_name": "Bad_Name"}, "block_name"),
                                           ({"file": "stack.txt"}, "file"),
                                           ({"file": "a\nb.yaml"}, "file"),
                                           ({"block_name": "ok", "extra": 1}, "extra")])
def test_a_stack_reference_names_the_bad_field(fields, field):
    with pytest.raises(ValidationError) as caught:
        StackRef(**fields)
    assert field in str(caught.value)


def test_the_janitor_reclaims_past_the_lease_and_after_a_dead_run_only():
    now = 1_000_000.0
    live = owner_labels("s", lease_expiry_epoch_s=int(now) + 60, run_id="r")
    assert judge(live, now_s=now, run_state="COMPLETED").reclaim is False
    assert judge(live, now_s=now, run_state="RUNNING").reclaim is False
    assert judge(live, now_s=now, run_state=None).reclaim is False
    for dead in ("CRASHED", "FAILED", "CANCELLED"):
        assert judge(live, now_s=now, run_state=dead).reason == f"its spin-up run ended {dead}"
    assert "unknown" in judge(live, now_s=now, run_state="UNKNOWN").reason
    expired = judge(owner_labels("s", lease_expiry_epoch_s=int(now) - 30), now_s=now, run_state="RUNNING")
    assert expired.reclaim and expired.reason == "lease expired 30s ago"


def test_cost_counts_every_gpu_node_from_the_pool_request_at_the_stack_price():
    cost = estimate_cost(SPEC, gpu_billed_since_s=0.0, now_s=1800.0)
    assert cost.gpu_node_hours == pytest.approx(1.0)            # 2 nodes x 30 minutes
    assert cost.usd == pytest.approx(SPEC.lifecycle.price_per_node_hour_usd)
    assert estimate_cost(SPEC, None, 1800.0).usd == 0


def test_the_timeline_records_phases_in_start_order_with_their_outcome():
    clock = ScaledClock(1000.0)
    timeline = Timeline(clock)
    started = clock.time()
    with timeline.phase("cluster"):
        time.sleep(0.01)
    with pytest.raises(RuntimeError), timeline.phase("model-load"):
        raise RuntimeError("boom")
    timeline.record("gpu-node-pool", started, outcome="ok")
    rows = timeline.as_rows()
    assert [r["phase"] for r in rows] == ["gpu-node-pool", "cluster", "model-load"]
    assert [r["outcome"] for r in rows] == ["ok", "ok", "RuntimeError"]
    assert rows[1]["duration_s"] >= 5        # 10 ms at 1000x
    assert "| cluster |" in timeline_table(timeline)


def test_the_clock_comes_from_the_environment_or_is_real_time():
    assert isinstance(clock_from_env({}), SystemClock)
    clock = clock_from_env({TIME_SCALE_ENV: "60@1000.5"})
    assert clock.time_scale == 60 and clock.anchor_epoch_s == 1000.5
    assert clock.time() > time.time()        # 60x since 1000.5 s after the epoch: far ahead of now
    with pytest.raises(ValueError, match=TIME_SCALE_ENV):
        clock_from_env({TIME_SCALE_ENV: "fast"})


def test_two_scaled_clocks_with_one_anchor_agree_on_now():
    anchor = time.time() - 10
    a, b = ScaledClock(60, anchor_epoch_s=anchor), ScaledClock(60, anchor_epoch_s=anchor)
    assert abs(a.time() - b.time()) < 1.0
    assert a.to_env().startswith("60@")


def test_a_failed_spin_up_is_kept_only_when_the_run_or_the_policy_says_so():
    from flows.spin_down import keep_reason

    assert keep_reason({}, SPEC) is None
    assert keep_reason({"keep_on_failure": True}, SPEC) == "the run set keep_on_failure"
    debug = SPEC.updated({"lifecycle": {"keep_for_debugging": True}})
    assert keep_reason({}, debug) == "lifecycle.keep_for_debugging is on"
    no_teardown = SPEC.updated({"lifecycle": {"teardown_on_failure": False}})
    assert keep_reason({}, no_teardown) == "lifecycle.teardown_on_failure is off"


@pytest.mark.parametrize("value, ok", [("prefect.flow-run.0b9e8a2c-4bd7-4a47-9a8f-5c1d2e3f4a5b", True),
                                       ("0b9e8a2c-4bd7-4a47-9a8f-5c1d2e3f4a5b", True),
                                       ("prefect.flow-run.*", False), ("{{ event.resource.id }}", False)])
def test_the_crash_chain_names_the_failed_run_by_id_only(value, ok):
    from pydantic import TypeAdapter

    from flows.spin_down import RunRef

    adapter = TypeAdapter(RunRef)
    if ok:
        assert adapter.validate_python(value) == value
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)

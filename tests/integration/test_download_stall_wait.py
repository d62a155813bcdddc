"""The model-load wait fails a stalled weight download after `download_stall_s`, and only then.

On the sandbox's Kubernetes side with the real gateway: the waiter reads the Ray dashboard's node
summary through the API server's service proxy. The stall's start is read from the sandbox's own
replica record (placed at `replica_at`, stalled once `at_fraction` of the nominal download time has
passed), and the failure's time from the sandbox clock, so the bound is on simulated seconds.
"""

from __future__ import annotations

import re

import pytest

from blocks.errors import RolloutFailed
from sandbox.kube.rayserve import serve_registry
from tasks.ray_service import ensure_ray_service
from tasks.ray_service_wait import WaitSettings, wait_for_ray_service_ready
from tasks.waiting import State
from tests.integration.kuberay_sandbox import operator_sandbox, reset_scenario, stack_spec

STALL_S = 600.0
TIME_SCALE = 60.0
# A look is due at least every 30 s (WaitSettings.look_interval_s); at 60x each wall second a busy
# 2-core machine adds is 60 simulated seconds more. So the failure comes within 600 + 30 + 90 s of the
# stall (1.5 wall seconds of lag allowed), and never before the 600 s.
SLACK_S = 120.0


@pytest.fixture(scope="module")
def box():
    yield from operator_sandbox(TIME_SCALE)


@pytest.fixture
def clean(box):
    yield
    reset_scenario(box)


def llm_run(box):
    """The sandbox's record of the LLM app on the RayService's current cluster."""
    rs = box.ctx.store.get(("ray.io", "rayservices"), "default", "deepseek-r1") or {}
    status = rs.get("status") or {}
    cluster = ((status.get("pendingServiceStatus") or {}).get("rayClusterName")
               or (status.get("activeServiceStatus") or {}).get("rayClusterName"))
    instance = serve_registry(box.ctx).instance("default", cluster)
    return instance.apps["llm_app"]


def test_a_stalled_download_fails_the_wait_with_the_stall_message_within_the_limit(box, clean):
    box.inject({"kind": "stalled_download", "at_fraction": 0.4})
    spec = stack_spec(timeouts={"operator_ready_s": 6 * 3600, "model_load_s": 6 * 3600,
                                "download_stall_s": STALL_S})
    ensure_ray_service.fn(box.kube, spec)
    with pytest.raises(RolloutFailed) as failure:
        wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock)
    failed_at = box.sim_elapsed_s()
    run = llm_run(box)
    stalled_at = run.replica_at + run.stall_fraction * run.nominal_download_s
    message = str(failure.value)
    assert "[weight-download]" in message and "stalled at 286 GB" in message   # 10.5 GB image + 0.4 x 688
    written = re.search(r"; (\d+) GB of it written while the wait watched\)", message)
    assert written and int(written.group(1)) <= 276                     # the download seen from the first look
    assert "Hugging Face token" in message and "egress" in message and "bucket" in message
    assert STALL_S <= failed_at - stalled_at <= STALL_S + SLACK_S, failed_at - stalled_at


def test_a_slow_download_and_a_long_flat_engine_warm_up_still_serve(box, clean):
    # download_stall_s at its least (60 s) and a 4-minute warm-up with the GPU memory up and flat: a
    # classifier that took a flat disk alone for a stall would fail this load.
    kube = box.ctx.profile["kube"]
    warmup = kube["engine_warmup_s"]
    kube["engine_warmup_s"] = 240
    box.inject({"kind": "slow_download", "factor": 3})
    try:
        spec = stack_spec()
        ensure_ray_service.fn(box.kube, spec)
        settings = WaitSettings(timeout_s=6 * 3600, download_stall_s=60.0)
        look = wait_for_ray_service_ready.fn(box.kube, spec, clock=box.clock, settings=settings)
    finally:
        kube["engine_warmup_s"] = warmup
    assert look.state is State.READY

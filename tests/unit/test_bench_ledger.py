"""The spin-up benchmark's ledger: the critical path in segments, modelled against what the sandbox saw."""

from __future__ import annotations

import pytest

from bench.spinup_measure import (
    MILESTONES,
    Variant,
    critical_path_parts,
    critical_path_s,
    ledger,
    ledger_table,
)
from sandbox.profile import load_profile

PROFILE = load_profile("realistic")
SIZE_GB = 688.0


def test_the_parts_add_up_to_the_critical_path_and_follow_the_profile():
    parts = critical_path_parts(PROFILE, size_gb=SIZE_GB, warm=True, staged=True)
    assert sum(s for _, s in parts) == pytest.approx(critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True,
                                                                     staged=True))
    assert len(parts) == len(MILESTONES) + 1
    gke, kube = PROFILE["gke"], PROFILE["kube"]
    assert parts[0][1] == 0.0                                     # warm: the pool is asked for at once
    assert parts[1][1] == gke["node_pool"]["gpu"]["nodes_after_s"] + kube["gpu_driver_install_s"]
    cold = critical_path_parts(PROFILE, size_gb=SIZE_GB, warm=False, staged=True)
    assert cold[0][1] == gke["cluster"]["create_s"]


def test_the_ledger_puts_each_extra_second_in_its_segment():
    chain = critical_path_parts(PROFILE, size_gb=SIZE_GB, warm=True, staged=True)
    v = Variant("ours warm staged", True, seconds=sum(s for _, s in chain) + 100, chain=chain,
                milestones={"pool_requested": 30.0, "gpus_allocatable": 30.0 + chain[1][1] + 10,
                            "ray_service_ready": 30.0 + chain[1][1] + 10 + chain[2][1] + 5})
    rows = ledger(v)
    extras = [round(measured - modelled, 6) for _, modelled, measured in rows]
    assert extras == [30.0, 10.0, 5.0, 55.0]
    assert sum(extras) == pytest.approx(v.seconds - sum(s for _, s in chain))
    table = ledger_table([v])
    assert "ours warm staged:" in table and "+55" in table


def test_a_milestone_the_sandbox_did_not_show_leaves_its_segments_unmeasured():
    chain = critical_path_parts(PROFILE, size_gb=SIZE_GB, warm=True, staged=False)
    v = Variant("ours warm", True, seconds=2000.0, chain=chain, milestones={"pool_requested": 20.0})
    rows = ledger(v)
    assert rows[0][2] == 20.0 and rows[1][2] is None and rows[2][2] is None and rows[3][2] is None

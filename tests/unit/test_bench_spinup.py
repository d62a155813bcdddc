"""The spin-up benchmark's arithmetic: critical path from the profile, bills, rates, the last line."""

from __future__ import annotations

import pytest

from bench.spinup_measure import (
    Variant,
    critical_path_s,
    pool_gpu_node_s,
    requests_per_min,
    streamed_line,
    summary_line,
)
from blocks.errors import SpecError
from blocks.spec import StackSpec
from sandbox.profile import load_profile

PROFILE = load_profile("realistic")
SIZE_GB = 688.0


def test_the_critical_path_adds_the_unoverlappable_chain_of_the_realistic_profile():
    cold = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=False, staged=False)
    warm = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True, staged=False)
    staged = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=False, staged=True)
    assert cold - warm == pytest.approx(PROFILE["gke"]["cluster"]["create_s"])
    hf, gcs = PROFILE["kube"]["weight_download_mb_per_s"], PROFILE["kube"]["gcs_download_mb_per_s"]
    assert cold - staged == pytest.approx(SIZE_GB * 1000 / hf - SIZE_GB * 1000 / gcs)
    assert 30 * 60 < cold < 50 * 60        # the guide's ~40 minutes, from the sourced durations


def test_the_prefetch_takes_the_download_off_the_chain_while_the_driver_installs():
    kube = PROFILE["kube"]
    without = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True, staged=False)
    with_prefetch = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True, staged=False, prefetch=True)
    # The download (~16 min) outlasts the driver (4.5 min): the driver install and the worker's init
    # step come off the chain (the prefetch pod's image mount takes the place of the worker's).
    assert without - with_prefetch == pytest.approx(kube["gpu_driver_install_s"] + kube["init_container_s"])
    # A model smaller than what the driver's minutes download is all there when the worker starts.
    small = critical_path_s(PROFILE, size_gb=1.0, warm=True, staged=False, prefetch=True)
    assert small == pytest.approx(critical_path_s(PROFILE, size_gb=1.0, warm=True, staged=False)
                                  - kube["image_streaming_start_s"] - 1000 / kube["weight_download_mb_per_s"])


def test_streaming_turns_the_download_and_the_load_into_one_pass_at_the_streaming_rate():
    kube = PROFILE["kube"]
    staged = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True, staged=True)
    streamed = critical_path_s(PROFILE, size_gb=SIZE_GB, warm=True, staged=True, streamed=True)
    assert staged - streamed == pytest.approx(SIZE_GB * 1000 / kube["gcs_download_mb_per_s"]
                                              + SIZE_GB * 1000 / kube["weight_load_mb_per_s"]
                                              - SIZE_GB * 1000 / kube["gcs_stream_mb_per_s"])


def test_gpu_node_seconds_come_from_the_meter_rows_of_one_pool():
    report = {"pools": [
        {"cluster": "p/us-east5-a/a", "pool": "gpu-node-pool", "gpu_node_seconds": 100.0},
        {"cluster": "p/us-east5-a/a", "pool": "default-pool", "gpu_node_seconds": 0.0},
        {"cluster": "p/us-east5-a/b", "pool": "gpu-node-pool", "gpu_node_seconds": 7.0}]}
    assert pool_gpu_node_s(report, "a", "gpu-node-pool") == 100.0
    assert pool_gpu_node_s(report, "c", "gpu-node-pool") == 0.0


def test_request_rate_counts_only_the_window():
    assert requests_per_min([0, 10, 30, 59, 61, 200], 0, 60) == 4
    assert requests_per_min([1, 2], 5, 5) == 0.0


def test_the_last_line_gives_ratios_to_the_baseline_and_the_worst_overhead():
    def v(name, minutes, gpu_min, cp_min, rate):
        return Variant(name, True, minutes * 60, gpu_min * 60, cp_min * 60, rate)
    variants = {x.name: x for x in [v("guide (baseline)", 50, 80, 40, 0.5), v("ours cold", 45, 70, 44, 2.0),
                                     v("ours warm", 40, 70, 38, 1.0), v("ours cold staged", 30, 40, 29.5, 1.5),
                                     v("ours warm staged", 20, 40, 19.5, 1.0), v("ours cold streamed", 25, 32, 24, 3.0),
                                     v("ours warm streamed", 15, 32, 14.5, 1.0)]}
    line = summary_line(variants, fatal_to_teardown_s=42.4)
    # The streamed runs count in the worst overhead (4.2% there) and the busiest request rate (3.0).
    assert line == ("cold_ratio=0.90 warm_ratio=0.80 cold_staged_ratio=0.60 warm_staged_ratio=0.40 "
                    "gpu_node_minutes_ratio=0.50 overhead_pct=5.3 fatal_to_teardown_s=42 api_requests_per_min=3.00")
    assert streamed_line(variants) == ("cold_streamed_ratio=0.50 warm_streamed_ratio=0.30 "
                                       "streamed_gpu_node_minutes_ratio=0.40")


def test_a_gs_model_source_must_name_a_valid_bucket():
    base = {"name": "s", "cluster": {"project": "my-project"}}
    spec = StackSpec.parse({**base, "serving": {"model_source": "gs://team-weights/deepseek-ai/DeepSeek-R1",
                                                "staged_from": "deepseek-ai/DeepSeek-R1"}})
    assert spec.serving.model_source.startswith("gs://")
    with pytest.raises(SpecError, match=r"serving.model_source: 'gs://X/y' is not a gs://BUCKET/PATH URI"):
        StackSpec.parse({**base, "serving": {"model_source": "gs://X/y"}})
    with pytest.raises(SpecError, match="serving.staged_from"):
        StackSpec.parse({**base, "serving": {"staged_from": "not a repo"}})


def test_the_summary_prices_the_warm_cluster_kept_overnight():
    from flows.summary import warm_cluster_line

    spec = StackSpec.parse({"name": "s", "cluster": {"project": "my-project"}})
    assert "$0.64/h ($0.10 GKE fee + 1 x e2-standard-16 at $0.536/h), $10.18 per 16-hour night" \
        in warm_cluster_line(spec)
    cold = spec.updated({"lifecycle": {"delete_cluster_on_teardown": True}})
    assert "the cluster is deleted" in warm_cluster_line(cold)

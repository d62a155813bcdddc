"""A stalled weight download is told from a slow download and from an engine start (pure).

The signals: the Ray workers' disk (flat for how long, while Serve says the replica initializes) and
their GPUs' memory from the dashboard's node summary. A stall is fatal after `download_stall_s`; a
download that still grows, an engine loading (GPU memory rising) or warming up (GPU memory up and
flat), and any case where a reading is missing never are.
"""

from __future__ import annotations

import pytest

from tasks.ray_service_download import DiskTrend, DiskWatch, summary_reading
from tasks.ray_service_readiness import Observation, Phase, classify_ray_service, replica_initializing
from tasks.waiting import State
from tests.unit.test_kuberay_judging import StepClock
from tests.unit.test_kuberay_readiness import apps, cluster_status, head_pod, ray_service, worker

INIT = ("Deployment 'LLMServer:deepseek' in application 'llm_app' has 1 replicas that have taken more than "
        "30s to initialize.\nThis may be caused by a slow __init__ or reconfigure method.")
SCHEDULE = ("Deployment 'LLMServer:deepseek' in application 'llm_app' has 1 replicas that have taken more than "
            "30s to be scheduled.")
CONFIG = ('applications:\n- name: llm_app\n  args:\n    llm_configs:\n    - model_loading_config:\n'
          '        model_id: deepseek\n        model_source: deepseek-ai/DeepSeek-R1\n')


def loading(message=INIT, config=CONFIG):
    rs = ray_service(pending=cluster_status(apps("DEPLOYING", deps=(("LLMServer:deepseek", "UPDATING"),
                                                                      ("OpenAiIngress", "HEALTHY")))))
    app = rs["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"]
    app["serveDeploymentStatuses"]["LLMServer:deepseek"]["message"] = message
    rs["spec"]["serveConfigV2"] = config
    return rs


def look(rs=None, *, disk=285.4, growing=False, flat_s=600.0, gpu=0.0, stall_s=600.0, grown=274.9):
    trend = None if disk is None else DiskTrend(disk, growing)
    return classify_ray_service(Observation(rs or loading(), [head_pod(), worker(1), worker(2)], disk=trend,
                                            gpu_used_gb=gpu, disk_flat_s=flat_s, disk_grown_gb=grown,
                                            download_stall_s=stall_s))


def test_a_disk_flat_for_the_limit_with_idle_gpus_is_a_fatal_stall_saying_where_how_long_and_what_to_check():
    c = look()
    assert c.look.state is State.FATAL and c.phase is Phase.WEIGHT_DOWNLOAD
    detail = c.look.detail
    assert detail.startswith("RayService deepseek-r1: weight download of model_source 'deepseek-ai/DeepSeek-R1' "
                             "stalled at 285 GB used on the fullest Ray worker's disk (image included; 275 GB of it "
                             "written while the wait watched)")
    assert "no growth for 600s (timeouts.download_stall_s 600s)" in detail
    assert "Serve deployment 'LLMServer:deepseek' is still initializing" in detail
    for hint in ("Hugging Face token", "rate limits", "bucket's read permission", "egress"):
        assert hint in detail


def test_a_download_that_never_started_says_nothing_was_written():
    detail = look(disk=10.5, grown=0.0).look.detail
    assert "stalled at 10 GB" in detail and "0 GB of it written while the wait watched" in detail


def test_a_stall_not_yet_at_the_limit_is_progress_in_weight_download():
    c = look(flat_s=599.0)
    assert c.look.state is State.PROGRESSING and c.phase is Phase.WEIGHT_DOWNLOAD and c.suspect is None
    assert "worker disk ~300 GB used, not growing" in c.look.detail


def test_a_gs_source_is_named_in_the_stall_message():
    config = CONFIG.replace("model_source: deepseek-ai/DeepSeek-R1",
                            "model_source:\n          bucket_uri: gs://my-weights/deepseek-ai/DeepSeek-R1")
    assert "model_source 'gs://my-weights/deepseek-ai/DeepSeek-R1' stalled" in look(loading(config=config)).look.detail


def test_a_download_that_still_grows_is_never_a_stall_however_long_it_takes():
    c = look(growing=True, flat_s=0.0)
    assert c.look.state is State.PROGRESSING and c.phase is Phase.WEIGHT_DOWNLOAD


@pytest.mark.parametrize("gpu_gb", [1.0, 20.5, 75.0])
def test_gpu_memory_in_use_is_an_engine_start_never_a_stall(gpu_gb):
    # 20.5: the engine loading weights (rising); 75: warming up or serving (up and flat for long).
    c = look(flat_s=3000.0, gpu=gpu_gb)
    assert c.look.state is State.PROGRESSING and c.phase is Phase.ENGINE_START


@pytest.mark.parametrize("missing", ["disk", "gpu", "flat", "limit"])
def test_without_one_of_the_readings_there_is_no_stall_detection(missing):
    kwargs = {"disk": None} if missing == "disk" else {"gpu": None} if missing == "gpu" else \
        {"flat_s": None} if missing == "flat" else {"stall_s": None}
    c = look(**({"flat_s": 3000.0} | kwargs))
    assert c.look.state is State.PROGRESSING


def test_without_gpu_readings_a_flat_disk_is_still_taken_as_the_engine_start():
    assert look(gpu=None).phase is Phase.ENGINE_START


@pytest.mark.parametrize("message", ["", SCHEDULE])
def test_a_replica_not_placed_yet_is_no_stall(message):
    c = look(loading(message=message), flat_s=3000.0)
    assert c.look.state is State.PROGRESSING
    assert not replica_initializing(loading(message=message))
    assert replica_initializing(loading())


def test_a_serving_app_is_never_a_stall():
    rs = ray_service(ready=("True", "NonZeroServeEndpoints"), endpoints=1, active=cluster_status(apps()))
    assert look(rs, flat_s=3000.0).look.state is State.READY


# -- a streamed load (serving.stream_weights): GPU memory is what grows ----------------------------

STREAMED = (CONFIG.replace("model_source: deepseek-ai/DeepSeek-R1",
                           "model_source:\n          bucket_uri: gs://my-weights/deepseek-ai/DeepSeek-R1")
            + "      engine_kwargs:\n        gpu_memory_utilization: 0.92\n        load_format: runai_streamer\n")
H100_GB = 85.5            # 81559 MiB, as Ray's reporter lists it


def stream_look(*, gpu=13.5, gpu_flat_s=600.0, total=H100_GB, config=STREAMED, message=INIT):
    return classify_ray_service(Observation(
        loading(message=message, config=config), [head_pod(), worker(1), worker(2)], disk=DiskTrend(10.5, None),
        gpu_used_gb=gpu, disk_flat_s=gpu_flat_s, disk_grown_gb=0.0, download_stall_s=600.0,
        gpu_flat_s=gpu_flat_s, gpu_total_gb=total))


def test_a_stream_whose_gpu_memory_stops_below_the_kv_share_for_the_limit_is_a_fatal_stall():
    c = stream_look()
    assert c.look.state is State.FATAL and c.phase is Phase.ENGINE_START
    assert c.look.detail.startswith(
        "RayService deepseek-r1: weight stream of model_source 'gs://my-weights/deepseek-ai/DeepSeek-R1' into GPU "
        "memory stalled at 13.5 GB on the busiest GPU (below the 79 GB vLLM takes once the weights are in): no "
        "growth for 600s (timeouts.download_stall_s 600s)")
    for hint in ("bucket's read permission", "storage.googleapis.com", "vllm >= 0.11.1", "serving.stream_weights"):
        assert hint in c.look.detail


@pytest.mark.parametrize("case", ["not yet at the limit", "kv share taken (warm-up)", "no GPU total",
                                  "not initializing", "downloaded, not streamed"])
def test_a_stream_is_not_called_stalled_while_it_grows_warms_up_or_cannot_be_judged(case):
    kwargs = {"not yet at the limit": {"gpu_flat_s": 599.0},
              "kv share taken (warm-up)": {"gpu": 0.92 * H100_GB, "gpu_flat_s": 3000.0},
              "no GPU total": {"total": None, "gpu_flat_s": 3000.0},
              "not initializing": {"message": SCHEDULE, "gpu_flat_s": 3000.0},
              "downloaded, not streamed": {"config": CONFIG, "gpu_flat_s": 3000.0}}[case]
    c = stream_look(**kwargs)
    assert c.look.state is State.PROGRESSING
    assert c.phase is (Phase.GPU_NODES if case == "not initializing" else Phase.ENGINE_START)


def test_the_summary_reading_gives_the_busiest_gpus_memory_and_its_size():
    body = {"data": {"summary": [
        {"raylet": {"isHeadNode": True}, "disk": {"/": {"used": 20e9}}, "gpus": []},
        {"raylet": {"isHeadNode": False}, "disk": {"/": {"used": 11e9}},
         "gpus": [{"memoryUsed": 1000, "memoryTotal": 81559}, {"memoryUsed": 13000, "memoryTotal": 81559}]}]}}
    reading = summary_reading(body)
    assert reading.gpu_used_gb == pytest.approx(13000 * 2**20 / 1e9)
    assert reading.gpu_total_gb == pytest.approx(H100_GB, abs=0.05)


# -- the disk watch's flat time --------------------------------------------------------------------

def test_the_flat_time_counts_from_the_last_growth_while_the_replica_is_placed():
    clock = StepClock()
    watch = DiskWatch(clock)
    watch.update(10.5)
    assert watch.flat_s == 0
    clock.now = 30
    watch.update(30.0)
    assert watch.flat_s == 0                                  # grew
    clock.now = 630
    watch.update(30.2)
    assert watch.flat_s == 600                                # below the 0.5 GB noise threshold: flat
    assert watch.grown_gb == pytest.approx(19.7)              # written since the first look


def test_a_slow_download_accumulates_growth_across_looks_and_never_stays_flat_for_long():
    clock = StepClock()
    watch, used, longest = DiskWatch(clock), 10.5, 0.0
    for _ in range(100):                                     # 1 MB/s: 30 MB per 30 s look
        clock.now += 30
        used += 0.03
        watch.update(used)
        longest = max(longest, watch.flat_s)
    assert longest <= 510                                     # growth of 0.5 GB shows every ~500 s < 600


def test_the_flat_time_restarts_while_the_replica_is_not_placed_and_when_the_disk_shrinks():
    clock = StepClock()
    watch = DiskWatch(clock)
    watch.update(10.5, placed=False)
    clock.now = 900
    watch.update(10.5, placed=False)
    assert watch.flat_s == 0                                  # e.g. the app still building: not a stall
    clock.now = 930
    watch.update(10.5)
    assert watch.flat_s == 30                                 # placed since the last look that saw it not
    clock.now = 1200
    watch.update(10.5)
    assert watch.flat_s == 300
    clock.now = 1400
    watch.update(5.0)
    assert watch.flat_s == 0 and watch.grown_gb == 0          # a fresh pod: the download starts over


# -- reading the dashboard's node summary ------------------------------------------------------------

def node(head=False, disk_used=10.5e9, gpus=()):
    return {"hostname": "h", "raylet": {"isHeadNode": head}, "disk": {"/": {"used": disk_used}},
            "gpus": [{"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100 80GB HBM3", "utilizationGpu": 0,
                      "memoryUsed": m, "memoryTotal": 81559} for i, m in enumerate(gpus)]}


def test_the_summary_gives_the_fullest_worker_disk_and_the_busiest_gpu():
    body = {"result": True, "data": {"summary": [node(head=True, disk_used=90e9),
                                                  node(disk_used=200e9, gpus=[0, 0]),
                                                  node(disk_used=300e9, gpus=[0, 40000])]}}
    reading = summary_reading(body)
    assert reading.disk_used_gb == 300.0
    assert reading.gpu_used_gb == pytest.approx(40000 * 2**20 / 1e9)


def test_a_summary_without_gpus_gives_no_gpu_reading_and_odd_bodies_give_nothing():
    assert summary_reading({"data": {"summary": [node(disk_used=5e9)]}}).gpu_used_gb is None
    for body in (None, [], {"data": None}, {"data": {"summary": "x"}}, {"data": {"summary": [node(head=True)]}}):
        assert summary_reading(body) is None
    odd = {"data": {"summary": [{"raylet": None, "disk": "full", "gpus": [{"memoryUsed": "lots"}, 7]}]}}
    assert summary_reading(odd).disk_used_gb == 0 and summary_reading(odd).gpu_used_gb == 0

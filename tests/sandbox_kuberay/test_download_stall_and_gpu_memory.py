"""The dashboard's node summary tells a stalled weight download from an engine start.

A `stalled_download` fault lets the download reach `at_fraction` of the weights, then the Ray
worker's disk stays flat and its GPUs idle for good; a healthy load shows GPU memory (`gpus`, MiB,
as Ray's reporter agent lists it) rising while the engine loads the weights and staying up while it
warms up and serves. Instants are computed from the sandbox's own replica record, so the test reads
the summary at known points of the load rather than guessing from wall time.
"""

from __future__ import annotations

import json

import pytest
import yaml

from sandbox.kube.rayserve_status import CUDA_CONTEXT_MIB
from tests.sandbox_kuberay.conftest import (
    RAYSERVICES,
    add_guide_nodes,
    call_service,
    install_crds,
    install_operator,
    is_serving,
    make_sim,
    placed_run,
    sample_rayservice,
    stop_sim,
)

H100_MIB = 81559
WEIGHTS_GB, IMAGE_GB = 688, 10.5      # the realistic profile's DeepSeek-R1 and ray-llm image sizes


@pytest.fixture
def sim():
    simulation = make_sim(600)        # slow enough to read the summary at chosen instants (+-15 s)
    yield simulation
    stop_sim(simulation)


def start(sim) -> None:
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    sim.store.create(RAYSERVICES, sample_rayservice())




def workers(instance, sim) -> list[dict]:
    reply = call_service(sim, f"{instance.cluster}-head-svc", 8265, "GET", "/nodes", query="view=summary")
    return [n for n in json.loads(reply.body)["data"]["summary"] if not n["raylet"]["isHeadNode"]]


def disk_gb(nodes: list[dict]) -> float:
    return max(n["disk"]["/"]["used"] for n in nodes) / 1e9


def gpu_mib(nodes: list[dict]) -> list[int]:
    return [g["memoryUsed"] for n in nodes for g in n["gpus"]]


def sleep_until(sim, at_s: float) -> None:
    sim.ctx.clock.sleep(max(0.0, at_s - sim.ctx.clock.elapsed_s()))


@pytest.mark.parametrize("fraction", [0.25, 0.0])
def test_a_stalled_download_stops_at_its_fraction_with_the_disk_flat_and_the_gpus_idle(sim, fraction):
    sim.ctx.faults.add({"kind": "stalled_download", "at_fraction": fraction})
    start(sim)
    instance, run = placed_run(sim)
    assert run.stall_fraction == fraction and run.nominal_download_s > 0
    sleep_until(sim, run.replica_at + fraction * run.nominal_download_s + 60)
    before = workers(instance, sim)
    sim.ctx.clock.sleep(900)
    after = workers(instance, sim)
    assert disk_gb(after) == pytest.approx(IMAGE_GB + fraction * WEIGHTS_GB, abs=0.1)
    assert disk_gb(after) == disk_gb(before)                     # flat: the stall is for good
    assert len(gpu_mib(after)) == 16 and set(gpu_mib(after)) == {0}
    assert {g["memoryTotal"] for n in after for g in n["gpus"]} == {H100_MIB}
    status = (sim.rayservice()["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"])
    assert status["status"] == "DEPLOYING"
    assert "taken more than 30s to initialize" in json.dumps(status)


def test_gpu_memory_rises_while_the_engine_loads_and_stays_up_through_warm_up_and_serving(sim):
    start(sim)
    instance, run = placed_run(sim)
    loading_at = run.replica_at + run.download_s
    load_s = WEIGHTS_GB * 1000 / 3000                            # realistic weight_load_mb_per_s
    sleep_until(sim, loading_at - 120)
    downloading = workers(instance, sim)
    assert set(gpu_mib(downloading)) == {0} and disk_gb(downloading) < IMAGE_GB + WEIGHTS_GB
    sleep_until(sim, loading_at + load_s / 2)
    loading = gpu_mib(workers(instance, sim))
    per_gpu_weights = WEIGHTS_GB * 1e9 / 16 / 2**20
    assert all(CUDA_CONTEXT_MIB < m < CUDA_CONTEXT_MIB + per_gpu_weights for m in loading), loading
    sleep_until(sim, loading_at + load_s + 30)                  # warm-up: up (KV cache) and flat
    warm_up = [workers(instance, sim), None]
    sim.ctx.clock.sleep(60)
    warm_up[1] = workers(instance, sim)
    assert gpu_mib(warm_up[0]) == gpu_mib(warm_up[1]) == [int(0.92 * H100_MIB)] * 16
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving", timeout_s=30)
    assert gpu_mib(workers(instance, sim)) == [int(0.92 * H100_MIB)] * 16


BUCKET = "gs://team-weights/deepseek-ai/DeepSeek-R1"
STREAM_S = WEIGHTS_GB * 1000 / 2000                             # realistic gcs_stream_mb_per_s


def start_streamed(sim) -> None:
    """The sample RayService serving the bucket copy with vLLM's streamer (serving.stream_weights)."""
    install_crds(sim)
    install_operator(sim)
    add_guide_nodes(sim)
    service = sample_rayservice()
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    llm = config["applications"][0]["args"]["llm_configs"][0]
    llm["model_loading_config"]["model_source"] = {"bucket_uri": BUCKET}
    llm["engine_kwargs"].update(load_format="runai_streamer", model_loader_extra_config={"distributed": True})
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    sim.store.create(RAYSERVICES, service)


def test_a_streamed_model_never_touches_the_disk_and_fills_the_gpus_at_the_streaming_rate(sim):
    start_streamed(sim)
    instance, run = placed_run(sim)
    assert run.download_s == 0 and run.load_s == pytest.approx(STREAM_S)
    sleep_until(sim, run.replica_at + STREAM_S / 2)
    halfway = workers(instance, sim)
    per_gpu_weights = WEIGHTS_GB * 1e9 / 16 / 2**20
    assert disk_gb(halfway) == pytest.approx(IMAGE_GB, abs=0.01)     # the weights go to GPU memory only
    assert all(m == pytest.approx(CUDA_CONTEXT_MIB + per_gpu_weights / 2, rel=0.1) for m in gpu_mib(halfway))
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving", timeout_s=30)
    # Served one stream plus the warm-up after placement: no download before it, no load after it.
    assert sim.ctx.clock.elapsed_s() - run.replica_at == pytest.approx(STREAM_S + 150, abs=45)
    assert disk_gb(workers(instance, sim)) == pytest.approx(IMAGE_GB, abs=0.01)


def test_a_stalled_stream_stops_the_gpu_memory_part_way_with_the_disk_flat(sim):
    sim.ctx.faults.add({"kind": "stalled_download", "at_fraction": 0.3})
    start_streamed(sim)
    instance, run = placed_run(sim)
    sleep_until(sim, run.replica_at + STREAM_S)
    before = workers(instance, sim)
    sim.ctx.clock.sleep(600)
    after = workers(instance, sim)
    per_gpu_weights = WEIGHTS_GB * 1e9 / 16 / 2**20
    assert gpu_mib(before) == gpu_mib(after) == [int(CUDA_CONTEXT_MIB + 0.3 * per_gpu_weights)] * 16
    assert disk_gb(after) == pytest.approx(IMAGE_GB, abs=0.01)
    status = sim.rayservice()["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"]
    assert status["status"] == "DEPLOYING" and "taken more than 30s to initialize" in json.dumps(status)

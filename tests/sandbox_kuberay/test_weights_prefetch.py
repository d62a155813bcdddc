"""The weights prefetch DaemonSet on the simulated cluster: a pod per GPU node copies the model into a
hostPath on the node's Local SSD while GKE installs the GPU driver, and a Ray worker whose Hugging Face
cache is that hostPath downloads only what the copy has not finished.

Expected instants come from the realistic profile (688 GB at 700 MB/s = 982.9 s) and from the
sandbox's own records (the copy's start, the replica's placement), so each assertion checks a computed
time, with a tolerance for the clock's scheduling jitter at this time scale.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sandbox.kube.controllers.nodes import add_node_pool_nodes, remove_node
from sandbox.kube.weights_cache import node_caches
from tests.sandbox_kuberay.conftest import (
    GPU_POOL,
    RAYSERVICES,
    add_guide_nodes,
    call_service,
    condition,
    container_state,
    install_crds,
    install_operator,
    is_serving,
    make_sim,
    placed_run,
    pods,
    sample_rayservice,
    stop_sim,
)

DAEMONSETS = ("apps", "daemonsets")
HOST_PATH = "/mnt/stateful_partition/kube-ephemeral-ssd/gke-llm-flows/hf-cache"
MODEL = "deepseek-ai/DeepSeek-R1"
SIZE = 688e9                                   # realistic profile: models[DeepSeek-R1] GB
RATE = 700e6                                   # realistic profile: weight_download_mb_per_s
FULL_S = SIZE / RATE                           # 982.9 s
GCS_RATE = 2000e6                              # realistic profile: gcs_download_mb_per_s
GS_MIRROR = f"gs://my-weights/models/{MODEL}"
IMAGE_GB = 10.5
DRIVER_S = 270                                 # realistic profile: gpu_driver_install_s
JITTER_S = 40.0                                # simulated seconds of polling/scheduling slack
GPU_NODES = ["gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-a1b2", "gke-kuberay-gpu-cluster-gpu-node-pool-9f8e7d6c-c3d4"]


@pytest.fixture
def sim():
    simulation = make_sim(800)
    yield simulation
    stop_sim(simulation)


def worker_image() -> str:
    return sample_rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"][0]["image"]


def prefetch_ds(source: str = MODEL, model_id: str = "deepseek") -> dict[str, Any]:
    """The DaemonSet the flows apply (the contract's shape)."""
    labels = {"app.kubernetes.io/name": "weights-prefetch", "app.kubernetes.io/instance": "deepseek-r1"}
    container = {"name": "prefetch-weights", "image": worker_image(), "command": ["python", "-c", "..."],
                 "env": [{"name": "PREFETCH_SOURCE", "value": source}, {"name": "PREFETCH_MODEL_ID", "value": model_id},
                         {"name": "HF_HOME", "value": "/cache/huggingface"}],
                 "volumeMounts": [{"name": "hf-cache", "mountPath": "/cache/huggingface"}],
                 "securityContext": {"runAsUser": 0},
                 "readinessProbe": {"exec": {"command": ["test", "-f", "/cache/huggingface/gke-llm-flows/"
                                                         "0123456789abcdef.done"]}, "periodSeconds": 10},
                 "resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "deepseek-r1-prefetch", "namespace": "default",
                         "labels": {"app.kubernetes.io/managed-by": "gke-llm-flows"}},
            "spec": {"selector": {"matchLabels": labels},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                         "terminationGracePeriodSeconds": 5,
                         "volumes": [{"name": "hf-cache", "hostPath": {"path": HOST_PATH, "type": "DirectoryOrCreate"}}],
                         "containers": [container]}}}}


def rayservice(*, mount: bool = True, source: str = MODEL) -> dict[str, Any]:
    """The guide's sample serving `source`; with `mount`, its workers' HF cache is the prefetch's hostPath."""
    service = sample_rayservice()
    service["spec"]["serveConfigV2"] = service["spec"]["serveConfigV2"].replace(f'"{MODEL}"', f'"{source}"')
    spec = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    if mount:
        spec.setdefault("volumes", []).append({"name": "hf-cache", "hostPath": {"path": HOST_PATH,
                                                                                "type": "DirectoryOrCreate"}})
        spec["containers"][0].setdefault("volumeMounts", []).append(
            {"name": "hf-cache", "mountPath": "/home/ray/.cache/huggingface"})
    return copy.deepcopy(service)


def start_serving(sim, *, mount: bool = True, source: str = MODEL) -> None:
    install_crds(sim)
    install_operator(sim)
    sim.store.create(RAYSERVICES, rayservice(mount=mount, source=source))


def prefetch_pods(sim) -> list[dict[str, Any]]:
    return pods(sim, "app.kubernetes.io/name=weights-prefetch")


def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def fills(sim) -> dict[str, Any]:
    """Node name -> the copy into its cache directory (for the model), for the nodes that exist now."""
    nodes = {n["metadata"]["uid"]: n["metadata"]["name"] for n in sim.store.list(("", "nodes"))[0]}
    caches = node_caches(sim.ctx)
    result = {}
    for uid, name in nodes.items():
        for source in (MODEL, "Qwen/Qwen2.5-7B-Instruct", GS_MIRROR):
            fill = caches.get((uid, HOST_PATH, source))
            if fill is not None:
                result[name] = fill
    return result


def prefetching(sim) -> None:
    """The guide's nodes and the prefetch DaemonSet on them."""
    add_guide_nodes(sim)
    sim.store.create(DAEMONSETS, prefetch_ds())


def prefetch_complete(sim) -> None:
    sim.wait_for(lambda: (ps := prefetch_pods(sim)) and len(ps) == 2 and all(is_ready(p) for p in ps),
                 what="prefetch complete", timeout_s=30)


def serving_during_the_copy(sim):
    """Prefetch and serve at once: (the copies once running, the Serve instance, the replica's run)."""
    prefetching(sim)
    start_serving(sim)
    started = copying(sim)
    instance, run = placed_run(sim)
    return started, instance, run


def copying(sim, count: int = 2) -> dict[str, Any]:
    """The copies once `count` nodes' prefetch containers run."""
    return sim.wait_for(lambda: (f := fills(sim)) and sum(1 for x in f.values() if x.runner) == count and f,
                        what=f"{count} copies running")




def worker_disks_gb(sim, instance) -> list[float]:
    reply = call_service(sim, f"{instance.cluster}-head-svc", 8265, "GET", "/nodes", query="view=summary")
    nodes = json.loads(reply.body)["data"]["summary"]
    return [n["disk"]["/"]["used"] / 1e9 for n in nodes if not n["raylet"]["isHeadNode"]]


def sleep_until(sim, at_s: float) -> None:
    sim.ctx.clock.sleep(max(0.0, at_s - sim.ctx.clock.elapsed_s()))


def test_the_prefetch_is_ready_after_size_over_rate_having_started_before_the_gpus_were_allocatable(sim):
    registered = sim.ctx.clock.elapsed_s()
    prefetching(sim)
    started = copying(sim)
    assert sorted(started) == GPU_NODES                       # not on the CPU node
    for fill in started.values():
        assert fill.since < registered + DRIVER_S             # it runs while the driver installs
        assert fill.rate == RATE and fill.size == SIZE
    first_end = min(f.since for f in started.values()) + FULL_S
    sleep_until(sim, first_end - 300)
    assert not any(is_ready(p) for p in prefetch_pods(sim))
    ready_pods = sim.wait_for(lambda: (ps := prefetch_pods(sim)) and all(is_ready(p) for p in ps) and ps,
                              what="prefetch pods Ready", timeout_s=30)
    assert sim.ctx.clock.elapsed_s() == pytest.approx(max(f.since for f in started.values()) + FULL_S, abs=JITTER_S)
    ds = sim.store.get(DAEMONSETS, "default", "deepseek-r1-prefetch")
    assert ds["status"]["numberReady"] == 2 and ds["status"]["desiredNumberScheduled"] == 2
    sim.ctx.clock.sleep(600)                                  # a DaemonSet pod keeps running
    assert all(p["status"]["phase"] == "Running" and is_ready(p) for p in prefetch_pods(sim))
    assert {p["metadata"]["uid"] for p in prefetch_pods(sim)} == {p["metadata"]["uid"] for p in ready_pods}


def test_a_worker_that_finds_the_copy_complete_downloads_nothing(sim):
    prefetching(sim)
    prefetch_complete(sim)
    start_serving(sim)
    instance, run = placed_run(sim)
    assert run.download_s == 0 and run.nominal_download_s == pytest.approx(FULL_S)
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving", timeout_s=30)
    assert sim.ctx.clock.elapsed_s() == pytest.approx(run.replica_at + run.engine_s, abs=JITTER_S + 35)


def test_a_worker_that_starts_mid_copy_ends_its_download_when_the_copy_ends(sim):
    started, instance, run = serving_during_the_copy(sim)
    copy_start = max(f.since for f in started.values())
    copy_end = copy_start + FULL_S
    # Placed mid-copy: the copy's head start is the worker's wait for the driver minus the image pull
    # (realistic profile: ray-llm pulled at 60 MB/s, no Image streaming on this pool).
    assert copy_start + 30 < run.replica_at < copy_end - 300
    assert run.replica_at + run.download_s == pytest.approx(copy_end, abs=1.0)
    assert run.download_s == pytest.approx(FULL_S - (run.replica_at - copy_start), abs=1.0)
    sim.wait_for(lambda: is_serving(sim.rayservice()), what="serving", timeout_s=30)
    assert sim.ctx.clock.elapsed_s() == pytest.approx(copy_end + run.engine_s, abs=JITTER_S + 35)


@pytest.mark.parametrize(("mount", "source", "served", "full_s"), [
    (False, MODEL, MODEL, FULL_S), (True, "Qwen/Qwen2.5-7B-Instruct", MODEL, FULL_S),
    (True, GS_MIRROR, GS_MIRROR, SIZE / GCS_RATE)],
    ids=["worker-without-the-mount", "prefetch-of-another-model", "gs-mirror-fetched-in-full"])
def test_without_the_shared_cache_of_the_same_model_the_worker_downloads_in_full(sim, mount, source, served, full_s):
    add_guide_nodes(sim)
    sim.store.create(DAEMONSETS, prefetch_ds(source=source, model_id="other"))
    prefetch_complete(sim)
    start_serving(sim, mount=mount, source=served)
    _, run = placed_run(sim)
    assert run.download_s == pytest.approx(full_s)


def test_an_interrupted_copy_keeps_its_bytes_and_the_next_pod_resumes(sim):
    prefetching(sim)
    first_since = copying(sim)[GPU_NODES[0]].since
    sleep_until(sim, first_since + 0.4 * FULL_S)
    victim = next(p for p in prefetch_pods(sim) if p["spec"].get("nodeName") == GPU_NODES[0])
    deleted_at = sim.ctx.clock.elapsed_s()
    sim.deleter.delete_key(("", "pods"), victim)              # graceful, as `kubectl delete pod`
    resumed = sim.wait_for(lambda: (f := fills(sim)[GPU_NODES[0]]).runner not in (None, victim["metadata"]["uid"])
                           and f, what="a new pod copying")
    kept = resumed.done                                       # what the first pod had copied when it stopped
    assert kept == pytest.approx((deleted_at - first_since) * RATE, abs=JITTER_S * RATE)
    assert 0.35 * SIZE < kept < 0.5 * SIZE
    assert resumed.since >= deleted_at + 5                    # after the 5 s grace period
    assert resumed.ends_at() == pytest.approx(resumed.since + (SIZE - kept) / RATE)
    new_pod = sim.wait_for(lambda: next((p for p in prefetch_pods(sim) if p["spec"].get("nodeName") == GPU_NODES[0]
                                         and is_ready(p)), None), what="the new pod Ready", timeout_s=30)
    assert new_pod["metadata"]["uid"] != victim["metadata"]["uid"]
    assert sim.ctx.clock.elapsed_s() < resumed.since + 0.7 * FULL_S


def test_a_deleted_node_takes_its_cache_and_a_new_node_of_that_name_starts_empty(sim):
    prefetching(sim)
    prefetch_complete(sim)
    old_uid = sim.store.get(("", "nodes"), None, GPU_NODES[0])["metadata"]["uid"]
    remove_node(sim.ctx, GPU_NODES[0], reason="NodeLost")
    add_node_pool_nodes(sim.ctx, GPU_POOL, [GPU_NODES[0]])
    fresh = sim.wait_for(lambda: (f := fills(sim).get(GPU_NODES[0])) and f.runner and f, what="copy on the new node")
    assert sim.store.get(("", "nodes"), None, GPU_NODES[0])["metadata"]["uid"] != old_uid
    assert fresh.done == 0 and fresh.ends_at() == pytest.approx(fresh.since + FULL_S)
    sleep_until(sim, fresh.since + FULL_S / 2)
    on_new = [p for p in prefetch_pods(sim) if p["spec"].get("nodeName") == GPU_NODES[0]
              and p["status"].get("phase") == "Running"]
    assert on_new and not any(is_ready(p) for p in on_new)


def test_a_stalled_download_stops_the_copy_and_the_disk_at_its_fraction_and_never_loads(sim):
    sim.ctx.faults.add({"kind": "stalled_download", "at_fraction": 0.3})
    started, instance, run = serving_during_the_copy(sim)
    assert all(f.limit == pytest.approx(0.3 * SIZE) for f in started.values())
    sleep_until(sim, max(f.since for f in started.values()) + 0.3 * FULL_S + 60)
    before = worker_disks_gb(sim, instance)
    sim.ctx.clock.sleep(1200)
    after = worker_disks_gb(sim, instance)
    assert after == before and after == pytest.approx([IMAGE_GB + 0.3 * SIZE / 1e9] * 2, abs=0.5)
    assert run.download_s == float("inf")
    app = sim.rayservice()["status"]["pendingServiceStatus"]["applicationStatuses"]["llm_app"]
    assert app["status"] == "DEPLOYING" and not any(is_ready(p) for p in prefetch_pods(sim))


def test_the_node_summary_shows_the_disk_growing_with_the_copy(sim):
    started, instance, run = serving_during_the_copy(sim)
    early = worker_disks_gb(sim, instance)
    at = sim.ctx.clock.elapsed_s()
    copied = sorted(f.bytes_at(at) / 1e9 for f in started.values())
    assert min(copied) > 30                                    # the copy's head start shows on the disk
    assert sorted(early) == pytest.approx([IMAGE_GB + c for c in copied], abs=JITTER_S * RATE / 1e9)
    sim.ctx.clock.sleep(200)
    later = worker_disks_gb(sim, instance)
    grown = [b - a for a, b in zip(early, later, strict=True)]
    elapsed = sim.ctx.clock.elapsed_s() - at
    assert all(g == pytest.approx(elapsed * RATE / 1e9, abs=JITTER_S * RATE / 1e9) for g in grown), grown
    sleep_until(sim, max(f.since for f in started.values()) + FULL_S + 30)
    assert worker_disks_gb(sim, instance) == pytest.approx([IMAGE_GB + SIZE / 1e9] * 2, abs=0.1)


def test_a_slow_download_slows_the_copy_and_an_unknown_model_crashes_the_pod(sim):
    sim.ctx.faults.add({"kind": "slow_download", "factor": 2, "model_id": "deepseek"})
    prefetching(sim)
    started = copying(sim)
    assert all(f.ends_at() == pytest.approx(f.since + 2 * FULL_S) for f in started.values())
    unknown = prefetch_ds(source="nobody/no-such-model", model_id="nothing")
    unknown["metadata"]["name"] = "unknown-prefetch"
    unknown["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "unknown"
    unknown["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] = "unknown"
    sim.store.create(DAEMONSETS, unknown)
    crashed = sim.wait_for(lambda: next((p for p in pods(sim, "app.kubernetes.io/instance=unknown")
                                         if container_state(p).get("restartCount", 0) >= 1), None),
                           what="the unknown model's pod restarting", timeout_s=30)
    assert container_state(crashed)["lastState"]["terminated"]["exitCode"] == 1


def test_a_worker_that_outruns_a_slowed_copy_completes_the_cache_and_the_prefetch_turns_ready(sim):
    sim.ctx.faults.add({"kind": "slow_download", "factor": 3, "times": 2})     # the two copies take it
    started, _, run = serving_during_the_copy(sim)
    slowed_end = min(f.ends_at() for f in started.values())
    assert run.nominal_download_s == pytest.approx(FULL_S)                   # the worker is not slowed
    assert run.replica_at + run.download_s < slowed_end - 1000
    sim.wait_for(lambda: (ps := prefetch_pods(sim)) and all(is_ready(p) for p in ps), what="prefetch Ready",
                 timeout_s=30)
    assert sim.ctx.clock.elapsed_s() == pytest.approx(run.replica_at + run.download_s, abs=JITTER_S)

"""The control API over HTTP, the metered bill, start-up time, and a full A3 lifecycle at 600x."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from sandbox.app import Sandbox
from sandbox.testing import running_sandbox, wait_for
from tests.sandbox_gke.conftest import (
    PARENT,
    cluster_name,
    cluster_spec,
    gpu_pool_spec,
    make_client,
    running_cluster,
    wait_op,
)

REPO = Path(__file__).resolve().parents[2]


def test_sandbox_starts_in_under_3_seconds():
    started = time.monotonic()
    sandbox = Sandbox(time_scale=60.0, profile="realistic", seed=0, port=0).start()
    try:
        assert httpx.get(f"{sandbox.gke_url}/_sandbox/clock").status_code == 200
        assert time.monotonic() - started < 3.0
    finally:
        sandbox.stop()


def test_full_cluster_and_a3_pool_lifecycle_at_600x_takes_seconds_and_bills_gpu_time():
    started = time.monotonic()
    with running_sandbox(time_scale=600.0) as sandbox:
        client = make_client(sandbox)
        running_cluster(client)
        create = wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
        delete = wait_op(client, client.delete_node_pool(name=f"{cluster_name()}/nodePools/gpu-node-pool"))
        wait_op(client, client.delete_cluster(name=cluster_name()))
        bill = sandbox.inventory()["billing"]
        simulated = sandbox.clock.elapsed_s()
    assert time.monotonic() - started < 10.0              # ~2.1 s of profile critical path at 600x
    assert simulated >= 330 + 540 + 150 + 240             # the profile's durations really elapsed
    gpu = [p for p in bill["pools"] if p["pool"] == "gpu-node-pool"][0]
    # 2 VMs billed from VM creation (60 s after the create started) until the delete finished;
    # operation times are whole seconds, hence the tolerance.
    vm_lifetime = _seconds(delete.end_time) - (_seconds(create.start_time) + 60)
    assert vm_lifetime >= 540 - 60 + 150
    assert abs(gpu["gpu_node_seconds"] - 2 * vm_lifetime) <= 2 * 2
    assert gpu["vms_running"] == 0 and gpu["gpus_per_node"] == 8
    assert abs(gpu["cost_usd"] - gpu["node_seconds"] / 3600 * 99.58) < 0.001     # us-east5 list price
    assert bill["gpu_node_seconds"] == gpu["gpu_node_seconds"]
    default = [p for p in bill["pools"] if p["pool"] == "default-pool"][0]
    assert default["gpu_node_seconds"] == 0.0 and default["node_seconds"] > 0


def _seconds(rfc3339: str) -> float:
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def test_inventory_requests_and_clock_over_http(gke_sandbox, client):
    running_cluster(client)
    base = f"{gke_sandbox.gke_url}/_sandbox"
    inventory = httpx.get(f"{base}/inventory").json()
    (cluster,) = inventory["clusters"]
    assert (cluster["name"], cluster["status"], cluster["location"]) == ("kuberay-gpu-cluster", "RUNNING",
                                                                         "us-east5-a")
    assert cluster["node_pools"][0]["status"] == "RUNNING" and cluster["operation_in_progress"] is None
    assert inventory["billing"]["gpu_node_seconds"] == 0.0
    requests = httpx.get(f"{base}/requests").json()
    assert requests[0]["method"] == "POST" and requests[0]["path"] == f"/v1/{PARENT}/clusters"
    assert requests[0]["body"]["cluster"]["name"] == "kuberay-gpu-cluster"
    assert requests[0]["query"] == {"$alt": "json;enum-encoding=int"}
    assert [r["seq"] for r in requests] == list(range(len(requests)))
    assert all(r["method"] == "GET" for r in requests[1:])
    assert httpx.get(f"{base}/requests", params={"since": 1}).json() == requests[1:]
    clock = httpx.get(f"{base}/clock").json()
    assert clock["time_scale"] == 3000.0 and clock["elapsed_s"] > 330 and clock["now_rfc3339"].endswith("Z")
    assert gke_sandbox.requests() == httpx.get(f"{base}/requests").json()


def test_labels_of_pools_show_in_inventory(gke_sandbox, client):
    running_cluster(client)
    pool = gpu_pool_spec()
    pool.config.resource_labels = {"stack": "deepseek-r1"}
    wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=pool))
    pools = {p["name"]: p for p in gke_sandbox.inventory()["clusters"][0]["node_pools"]}
    assert pools["gpu-node-pool"]["resource_labels"] == {"stack": "deepseek-r1"}


def test_python_m_sandbox_prints_its_endpoints_and_serves_until_interrupted():
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--time-scale", "600", "--gke-only"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert "a simulation" in lines[0] and "600x" in lines[0]
        url = lines[1].split()[-1]
        assert url.startswith("http://127.0.0.1:")
        clock = wait_for(lambda: httpx.get(f"{url}/_sandbox/clock").json(), 5)
        assert clock["time_scale"] == 600.0
        assert httpx.get(f"{url}/v1/{PARENT}/clusters").json() == {}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_cluster_create_with_the_deprecated_initial_node_count_gets_a_default_pool(client):
    spec = cluster_spec()
    spec.node_pools = []
    spec.initial_node_count = 2
    spec.node_config = {"machine_type": "e2-standard-4"}
    wait_op(client, client.create_cluster(parent=PARENT, cluster=spec))
    (pool,) = client.get_cluster(name=cluster_name()).node_pools
    assert (pool.name, pool.initial_node_count, pool.config.machine_type) == ("default-pool", 2, "e2-standard-4")


def test_the_fast_profile_keeps_the_order_of_every_phase_but_shorter():
    with running_sandbox(time_scale=600.0, profile="fast") as sandbox:
        client = make_client(sandbox)
        create = wait_op(client, client.create_cluster(parent=PARENT, cluster=cluster_spec()))
        took = _seconds(create.end_time) - _seconds(create.start_time)
        assert 33 <= took <= 35
        pool = wait_op(client, client.create_node_pool(parent=cluster_name(), node_pool=gpu_pool_spec()))
        assert 54 <= _seconds(pool.end_time) - _seconds(pool.start_time) <= 56
        assert sandbox.profile["name"] == "fast" and "kube" in sandbox.profile

"""The rendered GKE requests equal what the real gcloud sends for the guide's commands.

gcloud runs the guide's two commands verbatim (plus --async) against a local HTTP endpoint that records
the request bodies (`api_endpoint_overrides`); the bodies are then compared with ours. The only
differences allowed are the ones render_gke documents as deliberate.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.cloud.container_v1 import types as T

from blocks.render_gke import (
    cluster_path,
    create_cluster_request,
    node_pool_v1beta1_body,
    node_pool_v1beta1_path,
    request_json,
)
from blocks.spec import StackSpec
from tests.unit.test_blocks_render_gke import GUIDE_CLUSTER, GUIDE_NODE_POOL, PROJECT
from tests.unit.test_blocks_render_rayservice import differences

GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")


class _Recorder(BaseHTTPRequestHandler):
    """Answer gcloud like GKE would, just enough, and keep every POST body by path."""

    posts: list[tuple[str, dict]] = []

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.command == "POST":
            self.posts.append((self.path.split("?")[0], json.loads(self.rfile.read(length))))
        if "/services/" in self.path:  # serviceusage: gcloud checks the APIs it needs are enabled
            body = {"name": self.path, "state": "ENABLED"}
        else:
            body = {"name": "operation-1", "status": "DONE", "operationType": "CREATE_CLUSTER"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


# The guide's note: a node pool that uses a reservation and a compact placement policy.
GUIDE_RESERVED_POOL = (GUIDE_NODE_POOL.replace("create gpu-node-pool", "create gpu-reserved")
                       + " --reservation-affinity=specific --reservation=h100-res --placement-policy=a3-compact")

# Capacity modes as GKE's docs create them (flex-start and queued: Dynamic Workload Scheduler).
DWS = ("--enable-autoscaling --total-min-nodes 0 --total-max-nodes 2 --location-policy=ANY "
       "--reservation-affinity=none --no-enable-autorepair")
MODE_FLAGS = {
    "spot": "--spot",
    "flex-start": f"--flex-start --max-run-duration=3600s {DWS}",
    "queued": f"--enable-queued-provisioning {DWS}",
}


def mode_command(mode: str) -> str:
    command = GUIDE_NODE_POOL.replace("create gpu-node-pool", f"create gpu-{mode}")
    if mode != "spot":
        command = command.replace("--num-nodes 2", "--num-nodes 0")
    return f"{command} {MODE_FLAGS[mode]}"


@pytest.fixture(scope="module")
def gcloud_bodies(tmp_path_factory) -> list[tuple[str, dict]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        procs = [_start_gcloud(command, url, tmp_path_factory.mktemp("gcloud"))
                 for command in (GUIDE_CLUSTER, GUIDE_NODE_POOL, GUIDE_RESERVED_POOL,
                                 *map(mode_command, MODE_FLAGS))]  # in parallel: each takes seconds
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"gcloud failed:\n{out}\n{err}"
    finally:
        server.shutdown()
        server.server_close()
    return list(_Recorder.posts)


def posted(bodies: list[tuple[str, dict]], path: str, name: str) -> dict:
    """Return the body gcloud POSTed to `path` for the cluster or pool called `name`."""
    for where, body in bodies:
        if where == path and (body.get("cluster") or body.get("nodePool"))["name"] == name:
            return body
    raise AssertionError(f"gcloud did not POST {name!r} to {path}: {[w for w, _ in bodies]}")


def _start_gcloud(command: str, url: str, config_dir) -> subprocess.Popen:
    env = dict(os.environ, CLOUDSDK_CONFIG=str(config_dir), CLOUDSDK_AUTH_DISABLE_CREDENTIALS="true",
               CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER=url, CLOUDSDK_API_ENDPOINT_OVERRIDES_SERVICEUSAGE=url,
               CLOUDSDK_CORE_PROJECT=PROJECT, CLOUDSDK_CORE_DISABLE_PROMPTS="1",
               CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true", CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="1")
    argv = [GCLOUD, *shlex.split(command)[1:], "--async"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def spec() -> StackSpec:
    return StackSpec(cluster={"project": PROJECT})


def test_cluster_request_equals_gclouds_but_for_documented_additions(gcloud_bodies):
    theirs = posted(gcloud_bodies, f"/v1/projects/{PROJECT}/locations/us-east5-a/clusters", "kuberay-gpu-cluster")
    ours = request_json(create_cluster_request(spec()))
    assert differences(theirs, ours) == {
        ("cluster", "resourceLabels"),                       # owner labels
        ("cluster", "ipAllocationPolicy"),                   # VPC-native, explicit (server default)
        ("cluster", "nodePools", 0, "config", "gcfsConfig"),  # image streaming, explicit (inherited)
    }


def test_node_pool_request_equals_gclouds_v1beta1_body_but_for_documented_additions(gcloud_bodies):
    theirs = posted(gcloud_bodies, node_pool_v1beta1_path(spec()), "gpu-node-pool")
    ours = {"parent": cluster_path(spec()), **node_pool_v1beta1_body(spec())}
    assert theirs["nodePool"]["config"]["hostMaintenancePolicy"] == {"maintenanceInterval": "PERIODIC"}
    assert differences(theirs, ours) == {
        ("nodePool", "config", "resourceLabels"),                                 # owner labels
        ("nodePool", "config", "gcfsConfig"),                                     # explicit (inherited)
        ("nodePool", "config", "accelerators", 0, "gpuDriverInstallationConfig"),  # LATEST, explicit
    }


def test_reserved_pool_with_placement_policy_equals_gclouds(gcloud_bodies):
    reserved = spec().updated({"gpu_pool": {"name": "gpu-reserved", "capacity_modes": ["reservation"],
                                            "reservation_name": "h100-res", "placement_policy_name": "a3-compact"}})
    theirs = posted(gcloud_bodies, node_pool_v1beta1_path(reserved), "gpu-reserved")
    ours = {"parent": cluster_path(reserved), **node_pool_v1beta1_body(reserved)}
    assert theirs["nodePool"]["config"]["reservationAffinity"]["values"] == ["h100-res"]
    assert differences(theirs, ours) == {
        ("nodePool", "config", "resourceLabels"),
        ("nodePool", "config", "gcfsConfig"),
        ("nodePool", "config", "accelerators", 0, "gpuDriverInstallationConfig"),
    }


def normalized(body: dict) -> dict:
    """Drop what proto3 treats as unset (explicit zeros/false) by parsing as v1 and dumping again."""
    body = json.loads(json.dumps(body))
    body["nodePool"]["config"].pop("hostMaintenancePolicy", None)  # v1beta1 only; compared above
    request = T.CreateNodePoolRequest.from_json(json.dumps(body), ignore_unknown_fields=False)
    return request_json(request)


@pytest.mark.parametrize("mode", list(MODE_FLAGS))
def test_capacity_modes_equal_gclouds_bodies(gcloud_bodies, mode):
    patch = {"name": f"gpu-{mode}", "capacity_modes": [mode]}
    if mode == "flex-start":
        patch["max_run_duration_s"] = 3600
    stack = spec().updated({"gpu_pool": patch})
    theirs = normalized(posted(gcloud_bodies, node_pool_v1beta1_path(stack), f"gpu-{mode}"))
    ours = normalized({"parent": cluster_path(stack), **node_pool_v1beta1_body(stack)})
    assert differences(theirs, ours) == {
        ("nodePool", "config", "resourceLabels"),
        ("nodePool", "config", "gcfsConfig"),
        ("nodePool", "config", "accelerators", 0, "gpuDriverInstallationConfig"),
    }

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

    posts: dict[str, dict] = {}

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.command == "POST":
            self.posts[self.path.split("?")[0]] = json.loads(self.rfile.read(length))
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


@pytest.fixture(scope="module")
def gcloud_bodies(tmp_path_factory) -> dict[str, dict]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        procs = [_start_gcloud(command, url, tmp_path_factory.mktemp("gcloud"))
                 for command in (GUIDE_CLUSTER, GUIDE_NODE_POOL)]  # in parallel: each takes seconds
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"gcloud failed:\n{out}\n{err}"
    finally:
        server.shutdown()
        server.server_close()
    return dict(_Recorder.posts)


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
    theirs = gcloud_bodies[f"/v1/projects/{PROJECT}/locations/us-east5-a/clusters"]
    ours = request_json(create_cluster_request(spec()))
    assert differences(theirs, ours) == {
        ("cluster", "resourceLabels"),                       # owner labels
        ("cluster", "ipAllocationPolicy"),                   # VPC-native, explicit (server default)
        ("cluster", "nodePools", 0, "config", "gcfsConfig"),  # image streaming, explicit (inherited)
    }


def test_node_pool_request_equals_gclouds_v1beta1_body_but_for_documented_additions(gcloud_bodies):
    path = node_pool_v1beta1_path(spec())
    assert path in gcloud_bodies, f"gcloud beta did not POST to {path}: {sorted(gcloud_bodies)}"
    theirs = gcloud_bodies[path]
    ours = {"parent": cluster_path(spec()), **node_pool_v1beta1_body(spec())}
    assert theirs["nodePool"]["config"]["hostMaintenancePolicy"] == {"maintenanceInterval": "PERIODIC"}
    assert differences(theirs, ours) == {
        ("nodePool", "config", "resourceLabels"),                                 # owner labels
        ("nodePool", "config", "gcfsConfig"),                                     # explicit (inherited)
        ("nodePool", "config", "accelerators", 0, "gpuDriverInstallationConfig"),  # LATEST, explicit
    }

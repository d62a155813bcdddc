"""The real gcloud CLI against the sandbox: the guide's own commands, describe, list, delete --quiet.

gcloud is pointed at the sandbox the documented way (isolated CLOUDSDK_CONFIG, api_endpoint_overrides
for container and serviceusage, credentials disabled). gcloud polls operations every 5 real seconds,
so the sandbox runs at 200000x here: every operation is over before gcloud's first poll.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.hooks import ClusterRef
from sandbox.testing import running_sandbox
from tests.sandbox_gke.conftest import PROJECT, ZONE, make_client, running_cluster

pytestmark = pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud CLI not installed")

GUIDE_CLUSTER = ["container", "clusters", "create", "kuberay-gpu-cluster", "--location=us-east5-a",
                 "--machine-type=e2-standard-16", "--num-nodes=1", "--enable-image-streaming"]
GUIDE_POOL = ["beta", "container", "node-pools", "create", "gpu-node-pool", "--cluster", "kuberay-gpu-cluster",
              "--machine-type", "a3-highgpu-8g", "--num-nodes", "2", "--accelerator", "type=nvidia-h100-80gb,count=8",
              "--zone", "us-east5-a", "--node-locations", "us-east5-a", "--host-maintenance-interval=PERIODIC"]


@pytest.fixture(scope="module")
def gcloud(tmp_path_factory):
    """A function running gcloud against a module-wide sandbox; returns (exit code, stdout, stderr)."""
    home = tmp_path_factory.mktemp("gcloud")
    env = dict(os.environ, CLOUDSDK_CONFIG=str(home / "config"), KUBECONFIG=str(home / "kubeconfig"),
               CLOUDSDK_CORE_DISABLE_PROMPTS="1", CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
               CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true")

    def run(*args: str, check: bool = True, tool: str = "gcloud",
            extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
        done = subprocess.run([tool, *args], env=dict(env, **(extra_env or {})), capture_output=True, text=True,
                              timeout=60)
        if check and done.returncode:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.returncode, done.stdout, done.stderr

    with running_sandbox(time_scale=200000.0, kubernetes=True) as sandbox:
        # The same properties `gcloud config set` writes (one real call below proves the command),
        # written directly because every gcloud start costs a second of CPU.
        (home / "config" / "configurations").mkdir(parents=True)
        (home / "config" / "active_config").write_text("default")
        (home / "config" / "configurations" / "config_default").write_text(
            f"[core]\nproject = {PROJECT}\n[auth]\ndisable_credentials = true\n"
            f"[api_endpoint_overrides]\nserviceusage = {sandbox.gke_url}/\n")
        run("config", "set", "api_endpoint_overrides/container", f"{sandbox.gke_url}/")
        run.sandbox = sandbox
        run.kubeconfig = env["KUBECONFIG"]
        run.home = home
        yield run


def _ref(name: str) -> ClusterRef:
    return ClusterRef(PROJECT, ZONE, name)


def _calls(sandbox, since: int) -> list[str]:
    return [f"{e['method']} {e['path']} {e['status']}" for e in sandbox.requests()[since:]]


def test_the_guides_commands_then_describe_list_and_delete(gcloud):
    sandbox = gcloud.sandbox
    _, out, err = gcloud(*GUIDE_CLUSTER)
    assert "kuberay-gpu-cluster" in out and "RUNNING" in out and "e2-standard-16" in out
    assert "kubeconfig entry generated for kuberay-gpu-cluster" in err and "WARNING" not in err
    calls = _calls(sandbox, 0)
    assert calls[0] == f"GET /v1/projects/{PROJECT}/services/containerfilesystem.googleapis.com 200"
    assert f"POST /v1/projects/{PROJECT}/locations/{ZONE}/clusters 200" in calls
    sent = next(e["body"]["cluster"] for e in sandbox.requests() if e["method"] == "POST")
    assert sent["nodePoolDefaults"]["nodeConfigDefaults"]["gcfsConfig"] == {"enabled": True}

    _, _, err = gcloud("container", "clusters", "get-credentials", "kuberay-gpu-cluster", "--zone", ZONE)
    assert "kubeconfig entry generated for kuberay-gpu-cluster" in err
    kubeconfig = yaml.safe_load(Path(gcloud.kubeconfig).read_text())
    (entry,) = [c["cluster"] for c in kubeconfig["clusters"] if c["name"].endswith("_kuberay-gpu-cluster")]
    inventory = sandbox.inventory()["clusters"][0]
    assert entry["server"] == f"https://{inventory['endpoint']}"
    ca = base64.b64decode(entry["certificate-authority-data"]).decode()
    assert ca == sandbox.hooks.get(_ref("kuberay-gpu-cluster")).ca_pem      # the API server's own CA

    mark = len(sandbox.requests())
    _, out, _ = gcloud(*GUIDE_POOL)
    assert "gpu-node-pool" in out and "a3-highgpu-8g" in out
    assert f"POST /v1beta1/projects/{PROJECT}/locations/{ZONE}/clusters/kuberay-gpu-cluster/nodePools 200" \
        in _calls(sandbox, mark)

    _, out, _ = gcloud("container", "clusters", "describe", "kuberay-gpu-cluster", "--zone", ZONE, "--format=json")
    cluster = json.loads(out)
    assert cluster["status"] == "RUNNING" and cluster["currentNodeCount"] == 3
    assert [p["name"] for p in cluster["nodePools"]] == ["default-pool", "gpu-node-pool"]
    _, out, _ = gcloud("beta", "container", "node-pools", "describe", "gpu-node-pool", "--cluster",
                       "kuberay-gpu-cluster", "--zone", ZONE, "--format=json")
    pool = json.loads(out)
    assert pool["config"]["hostMaintenancePolicy"] == {"maintenanceInterval": "PERIODIC"}
    assert pool["config"]["accelerators"] == [{"acceleratorCount": "8", "acceleratorType": "nvidia-h100-80gb"}]
    assert pool["initialNodeCount"] == 2 and pool["status"] == "RUNNING"
    _, out, _ = gcloud("container", "clusters", "list", "--format=value(name,status)")
    assert out.split() == ["kuberay-gpu-cluster", "RUNNING"]
    _, out, _ = gcloud("container", "node-pools", "list", "--cluster", "kuberay-gpu-cluster", "--zone", ZONE,
                       "--format=value(name)")
    assert out.split() == ["default-pool", "gpu-node-pool"]
    _, out, _ = gcloud("container", "operations", "list", "--format=value(operationType,status)")
    assert out.split() == ["CREATE_CLUSTER", "DONE", "CREATE_NODE_POOL", "DONE"]

    gcloud("container", "node-pools", "delete", "gpu-node-pool", "--cluster", "kuberay-gpu-cluster",
           "--zone", ZONE, "--quiet")
    gcloud("container", "clusters", "delete", "kuberay-gpu-cluster", "--zone", ZONE, "--quiet")
    code, _, err = gcloud("container", "clusters", "describe", "kuberay-gpu-cluster", "--zone", ZONE, check=False)
    assert code == 1 and "code=404" in err
    bill = sandbox.inventory()["billing"]
    assert bill["gpu_node_seconds"] > 0 and all(p["vms_running"] == 0 for p in bill["pools"])


def test_a_stockout_makes_the_guides_pool_command_fail_with_gce_stockout(gcloud):
    sandbox = gcloud.sandbox
    gcloud(*[a.replace("kuberay-gpu-cluster", "stockout-cluster") for a in GUIDE_CLUSTER])
    sandbox.inject({"kind": "stockout", "zone": ZONE, "times": 1})
    code, _, err = gcloud(*[a.replace("kuberay-gpu-cluster", "stockout-cluster") for a in GUIDE_POOL], check=False)
    assert code == 1 and "GCE_STOCKOUT" in err and "does not have enough resources available" in err
    (cluster,) = [c for c in sandbox.inventory()["clusters"] if c["name"] == "stockout-cluster"]
    assert [(p["name"], p["status"], p["vms_running"]) for p in cluster["node_pools"]] == [
        ("default-pool", "RUNNING", 1), ("gpu-node-pool", "ERROR", 0)]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_reaches_the_cluster_through_gclouds_kubeconfig(gcloud):
    """The guide's step 1 to 2: get-credentials, then kubectl through gke-gcloud-auth-plugin.

    The plugin asks gcloud for a token, so a fixed access token file stands in for a login here (the
    sandbox accepts any bearer token) instead of disabled credentials.
    """
    sandbox = gcloud.sandbox
    running_cluster(make_client(sandbox), "kubectl-cluster")       # quicker than another gcloud run
    token = gcloud.home / "token"
    token.write_text("sandbox-access-token")
    with_token = {"CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "false", "CLOUDSDK_CORE_ACCOUNT": "sandbox@example.com",
                  "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token)}
    gcloud("container", "clusters", "get-credentials", "kubectl-cluster", "--zone", ZONE, extra_env=with_token)
    _, out, _ = gcloud("get", "nodes", "-o", "name", tool="kubectl", extra_env=with_token)
    (cluster,) = [c for c in sandbox.inventory()["clusters"] if c["name"] == "kubectl-cluster"]
    assert out.split() == [f"node/{n}" for n in cluster["node_pools"][0]["nodes"]]

"""The real `kubectl` against the simulated API server, with the guide's commands: server-side apply of
the KubeRay CRDs and the sample RayService, `get -o yaml`, delete, and the client-side apply that fails
on the annotation size. Skipped where kubectl is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef
from sandbox.kube.cluster import KubeCluster
from tests.sandbox_kube.conftest import CRD_DIR, SAMPLE

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kubeconfig(cluster: KubeCluster, folder: Path) -> Path:
    ca = folder / "ca.crt"
    ca.write_text(cluster.ca_pem)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
              "clusters": [{"name": "sandbox", "cluster": {"server": cluster.base_url, "certificate-authority": str(ca)}}],
              "users": [{"name": "sandbox", "user": {"token": "ya29.sandbox"}}],
              "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox"}}]}
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class Kubectl:
    def __init__(self, cluster: KubeCluster, folder: Path):
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig(cluster, folder)), "HOME": str(folder)}
        self.cache = folder / "cache"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([KUBECTL, "--cache-dir", str(self.cache), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done


@pytest.fixture
def fresh_cluster():
    cluster = KubeCluster(ClusterRef("sandbox-project", "us-east5", "kubectl"), clock=ScaledClock(60), profile={},
                          faults=Faults(), controllers=())
    cluster.start()
    yield cluster
    cluster.stop()


def test_guide_commands_work_with_kubectl(fresh_cluster, tmp_path):
    kubectl = Kubectl(fresh_cluster, tmp_path)
    applied = kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    assert sorted(applied.stdout.split("\n"))[1:] == [
        f"customresourcedefinition.apiextensions.k8s.io/{n}.ray.io serverside-applied"
        for n in ("rayclusters", "raycronjobs", "rayjobs", "rayservices")]
    crds = kubectl("get", "crd").stdout
    assert crds.splitlines()[0].split() == ["NAME", "CREATED", "AT"]
    assert "rayservices.ray.io" in crds
    assert kubectl("apply", "--server-side", "-f", str(SAMPLE)).stdout.strip() == \
        "rayservice.ray.io/deepseek-r1 serverside-applied"
    listed = kubectl("get", "rayservice").stdout.splitlines()
    assert listed[0].split() == ["NAME", "SERVICE", "STATUS", "NUM", "SERVE", "ENDPOINTS"]
    assert listed[1].split()[0] == "deepseek-r1"
    live = yaml.safe_load(kubectl("get", "rayservice", "deepseek-r1", "-o", "yaml").stdout)
    sample = yaml.safe_load(SAMPLE.read_text())
    assert live["kind"] == "RayService" and live["metadata"]["namespace"] == "default"
    assert live["spec"]["serveConfigV2"] == sample["spec"]["serveConfigV2"]
    assert "managedFields" not in live["metadata"]        # kubectl hides them, as with a real server
    assert kubectl("delete", "rayservice", "deepseek-r1").stdout.strip() == 'rayservice.ray.io "deepseek-r1" deleted'
    missing = kubectl("get", "rayservice", "deepseek-r1", check=False)
    assert missing.returncode == 1
    assert 'rayservices.ray.io "deepseek-r1" not found' in missing.stderr


def test_client_side_apply_of_the_rayservice_crd_fails_with_too_long(fresh_cluster, tmp_path):
    kubectl = Kubectl(fresh_cluster, tmp_path)
    failed = kubectl("apply", "-f", str(CRD_DIR / "ray.io_rayservices.yaml"), check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == ('The CustomResourceDefinition "rayservices.ray.io" is invalid: '
                                     "metadata.annotations: Too long: must have at most 262144 bytes")
    assert kubectl("apply", "-f", str(CRD_DIR / "ray.io_raycronjobs.yaml")).stdout.strip() == \
        "customresourcedefinition.apiextensions.k8s.io/raycronjobs.ray.io created"    # 217 kB fits


def test_kubectl_server_side_apply_conflict_and_force(fresh_cluster, tmp_path):
    kubectl = Kubectl(fresh_cluster, tmp_path)
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: a}\n")
    kubectl("apply", "--server-side", "--field-manager=flows", "-f", str(manifest))
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: b}\n")
    conflict = kubectl("apply", "--server-side", "-f", str(manifest), check=False)
    assert conflict.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "flows" using v1: .data.mode' in conflict.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert kubectl("get", "configmap", "settings", "-o", "jsonpath={.data.mode}").stdout == "b"


def test_kubectl_create_generators_send_protobuf_that_the_server_reads(fresh_cluster, tmp_path):
    kubectl = Kubectl(fresh_cluster, tmp_path)
    assert kubectl("create", "namespace", "llm").stdout.strip() == "namespace/llm created"
    kubectl("create", "secret", "generic", "hf-secret", "-n", "llm", "--from-literal=hf_api_token=hf_abc")
    kubectl("create", "configmap", "settings", "-n", "llm", "--from-literal=mode=fast")
    secret = yaml.safe_load(kubectl("get", "secret", "hf-secret", "-n", "llm", "-o", "yaml").stdout)
    assert secret["data"] == {"hf_api_token": "aGZfYWJj"} and secret["type"] == "Opaque"
    assert "generation" not in secret["metadata"] and "generateName" not in secret["metadata"]
    assert kubectl("get", "configmap", "settings", "-n", "llm", "-o", "jsonpath={.data.mode}").stdout == "fast"
    refused = kubectl("create", "deployment", "web", "--image=nginx", "-n", "llm", check=False)
    assert refused.returncode == 1 and "protobuf bodies of kind 'Deployment' are not supported" in refused.stderr


def test_kubectl_logs_events_and_watch_tables(fresh_cluster, tmp_path):
    kubectl = Kubectl(fresh_cluster, tmp_path)
    store = fresh_cluster.ctx.store
    store.create(("", "pods"), {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kuberay-operator-0",
                                                                                 "namespace": "default"},
                                "spec": {"containers": [{"name": "kuberay-operator", "image": "x:1"}]},
                                "status": {"phase": "Running", "containerStatuses": [
                                    {"name": "kuberay-operator", "ready": True, "restartCount": 0,
                                     "state": {"running": {}}}]}})
    fresh_cluster.ctx.pod_logs.write("default", "kuberay-operator-0", "kuberay-operator", "Starting workers")
    assert kubectl("logs", "kuberay-operator-0").stdout == "Starting workers\n"
    store.create(("", "events"), {"apiVersion": "v1", "kind": "Event", "metadata": {
        "name": "gpu.1", "namespace": "default"}, "type": "Warning", "reason": "FailedScheduling",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        "involvedObject": {"kind": "Pod", "name": "gpu", "namespace": "default"},
        "lastTimestamp": fresh_cluster.ctx.clock.rfc3339()})
    events = kubectl("get", "events").stdout.splitlines()
    assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert events[1].split()[1:5] == ["Warning", "FailedScheduling", "pod/gpu", "0/1"]
    watched = kubectl("get", "pods", "-w", "--request-timeout=2s", check=False).stdout.splitlines()
    assert watched[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert watched[1].split()[:3] == ["kuberay-operator-0", "1/1", "Running"]

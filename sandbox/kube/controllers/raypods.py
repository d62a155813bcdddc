"""The objects the KubeRay operator builds for a RayCluster: head/worker pods and the head service.

Follows `ray-operator/controllers/ray/common/pod.go` and `service.go` @ v1.7.0 in what an observer
sees: names (`<cluster>-head-<rand>`, `<cluster>-<group>-worker-<rand>`, `<cluster>-head-svc`), the
`ray.io/*` labels, the generated `ray start` command, injected probes (exec `wget` checks; RayService
workers also check the Serve proxy), the `/dev/shm` memory volume and the workers' `wait-gcs-ready`
init container.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.controllers.base import owner_reference
from sandbox.kube.controllers.deployments import pod_from_template, random_suffix
from sandbox.kube.controllers.resources import container_requests

HEAD_GROUP = "headgroup"
DEFAULT_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}
METRICS_PORT = 8080
_HEALTH = "wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"
_GCS_HEALTH = "wget -T 10 -q -O- http://localhost:8265/api/gcs_healthz | grep success"
_PROXY_HEALTH = "wget -T 2 -q -O- http://localhost:8000/-/healthz | grep success"


def cluster_labels(cluster: dict[str, Any], node_type: str, group: str) -> dict[str, str]:
    name = cluster["metadata"]["name"]
    inherited = {k: v for k, v in (cluster["metadata"].get("labels") or {}).items() if k.startswith("ray.io/")}
    return {**inherited, "ray.io/cluster": name, "ray.io/node-type": node_type, "ray.io/group": group,
            "ray.io/identifier": f"{name}-{node_type}", "ray.io/is-ray-node": "yes",
            "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}


def head_pod(cluster: dict[str, Any]) -> dict[str, Any]:
    spec = cluster["spec"]["headGroupSpec"]
    name = cluster["metadata"]["name"]
    labels = cluster_labels(cluster, "head", HEAD_GROUP)
    if _in_rayservice(cluster):
        # BuildPod sets it for RayService pods; the RayService controller then keeps the head's in step
        # with its proxy's health each pass (`updateHeadPodServeLabel`).
        labels["ray.io/serve"] = "true"
    pod = pod_from_template(spec.get("template") or {}, name=f"{name}-head-{random_suffix()}",
                            namespace=cluster["metadata"].get("namespace"), owner=cluster, extra_labels=labels)
    params = {"dashboard-host": "0.0.0.0", "metrics-export-port": str(METRICS_PORT), "block": "true",
              "dashboard-agent-listen-port": "52365", **_params(spec)}
    _decorate(pod, cluster, f"ray start --head {_flags(params)}", head=True)
    return pod


def worker_pod(cluster: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    name = cluster["metadata"]["name"]
    labels = cluster_labels(cluster, "worker", group["groupName"])
    if _in_rayservice(cluster):
        labels["ray.io/serve"] = "true"
    pod = pod_from_template(group.get("template") or {}, name=f"{name}-{group['groupName']}-worker-{random_suffix()}",
                            namespace=cluster["metadata"].get("namespace"), owner=cluster, extra_labels=labels)
    params = {"address": f"{name}-head-svc.{cluster['metadata'].get('namespace')}.svc.cluster.local:6379",
              "metrics-export-port": str(METRICS_PORT), "block": "true", "dashboard-agent-listen-port": "52365",
              **_params(group)}
    _decorate(pod, cluster, f"ray start {_flags(params)}", head=False)
    image = pod["spec"]["containers"][0].get("image", "")
    pod["spec"].setdefault("initContainers", []).insert(0, {
        "name": "wait-gcs-ready", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/bash", "-lc", "--"],
        "args": [f"SECONDS=0; while true; do if (( SECONDS <= 120 )); then if ray health-check --address "
                 f"{params['address']} > /dev/null 2>&1; then echo \"GCS is ready.\"; break; fi; echo \"$SECONDS "
                 "seconds elapsed: Waiting for GCS to be ready.\"; else if ray health-check --address "
                 f"{params['address']}; then echo \"GCS is ready. Any error messages above can be safely "
                 "ignored.\"; break; fi; echo \"$SECONDS seconds elapsed: Still waiting for GCS to be ready.\"; "
                 "fi; sleep 5; done"],
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}}})
    return pod


def head_service(cluster: dict[str, Any]) -> dict[str, Any]:
    """The per-cluster headless head service (ports of the head container plus metrics)."""
    name = cluster["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{name}-head-svc", "namespace": cluster["metadata"].get("namespace"),
                         "labels": {"ray.io/cluster": name, "ray.io/node-type": "head",
                                    "ray.io/identifier": f"{name}-head",
                                    "app.kubernetes.io/name": "kuberay",
                                    "app.kubernetes.io/created-by": "kuberay-operator"},
                         "ownerReferences": [owner_reference(cluster)]},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP",
                     "publishNotReadyAddresses": True,
                     "selector": {"ray.io/cluster": name, "ray.io/node-type": "head"},
                     "ports": service_ports(head_ports(cluster)) + [
                         {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP",
                          "targetPort": METRICS_PORT, "appProtocol": "tcp"}]}}


def head_ports(cluster: dict[str, Any]) -> dict[str, int]:
    container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
    return ports or dict(DEFAULT_PORTS)


def service_ports(ports: dict[str, int]) -> list[dict[str, Any]]:
    return [{"name": name, "port": port, "protocol": "TCP", "targetPort": port, "appProtocol": "tcp"}
            for name, port in sorted(ports.items(), key=lambda kv: kv[1]) if name != "metrics"]


def desired_resources(cluster: dict[str, Any]) -> dict[str, str]:
    """desiredCPU/Memory/GPU/TPU as the RayCluster status reports them (limits over all replicas)."""
    from sandbox.kube.controllers.resources import format_cpu, format_memory
    totals = {"cpu": 0, "memory": 0, "nvidia.com/gpu": 0, "google.com/tpu": 0}
    groups = [(1, cluster["spec"]["headGroupSpec"])] + [
        (desired_replicas(g), g) for g in cluster["spec"].get("workerGroupSpecs") or []]
    for count, group in groups:
        for container in (group.get("template") or {}).get("spec", {}).get("containers") or []:
            for name, amount in container_requests(container).items():
                if name in totals:
                    totals[name] += amount * count
    return {"desiredCPU": format_cpu(totals["cpu"]), "desiredMemory": format_memory(totals["memory"]),
            "desiredGPU": str(int(totals["nvidia.com/gpu"])), "desiredTPU": str(int(totals["google.com/tpu"]))}


def desired_replicas(group: dict[str, Any]) -> int:
    if group.get("suspend"):
        return 0
    replicas = int(group.get("replicas", group.get("minReplicas", 0)) or 0)
    low, high = int(group.get("minReplicas", 0) or 0), int(group.get("maxReplicas", 2 ** 31 - 1) or 2 ** 31 - 1)
    return max(low, min(high, replicas)) * int(group.get("numOfHosts", 1) or 1)


def _in_rayservice(cluster: dict[str, Any]) -> bool:
    return (cluster["metadata"].get("labels") or {}).get("ray.io/originated-from-crd") == "RayService"


def _params(group: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (group.get("rayStartParams") or {}).items()}


def _flags(params: dict[str, str]) -> str:
    return " ".join(f"--{k}" if v == "true" and k == "block" else f"--{k}={v}" for k, v in sorted(params.items()))


def _decorate(pod: dict[str, Any], cluster: dict[str, Any], start: str, *, head: bool) -> None:
    container = pod["spec"]["containers"][0]
    container.setdefault("command", ["/bin/bash", "-lc", "--"])
    container.setdefault("args", [f"ulimit -n 65536; {start}"])
    env = [{"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {"fieldPath":
                                                                  "metadata.labels['ray.io/cluster']"}}},
           {"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "RAY_NODE_TYPE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/group']"}}},
           {"name": "KUBERAY_GEN_RAY_START_CMD", "value": start},
           {"name": "RAY_PORT", "value": "6379"}, {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
           {"name": "RAY_USAGE_STATS_EXTRA_TAGS", "value": "kuberay_version=v1.7.0;kuberay_crd=RayService"}]
    container["env"] = (container.get("env") or []) + env
    checks = f"{_HEALTH} && {_GCS_HEALTH}" if head else _HEALTH
    ready_checks = checks if head or not _in_rayservice(cluster) else f"{checks} && {_PROXY_HEALTH}"
    container.setdefault("livenessProbe", {"exec": {"command": ["bash", "-c", checks]}, "initialDelaySeconds": 30,
                                           "periodSeconds": 5, "timeoutSeconds": 5 if head else 2,
                                           "successThreshold": 1, "failureThreshold": 120})
    container.setdefault("readinessProbe", {"exec": {"command": ["bash", "-c", ready_checks]},
                                            "initialDelaySeconds": 10, "periodSeconds": 5,
                                            "timeoutSeconds": 5 if head else 2, "successThreshold": 1,
                                            "failureThreshold": 10 if head or not _in_rayservice(cluster) else 1})
    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    pod["spec"].setdefault("volumes", []).append(
        {"name": "shared-mem", "emptyDir": {"medium": "Memory", **({"sizeLimit": memory} if memory else {})}})
    container.setdefault("volumeMounts", []).append({"name": "shared-mem", "mountPath": "/dev/shm"})
    pod["metadata"]["annotations"] = {**pod["metadata"].get("annotations", {}),
                                      "ray.io/ft-enabled": "false"}

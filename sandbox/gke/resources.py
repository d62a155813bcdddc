"""The server-side fields GKE fills in on create, and the server config it advertises.

Requests are stored as sent (labels included); these functions add what GKE adds: status, links,
versions, defaults for unset node settings, network ranges, ids and fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.gke import catalog
from sandbox.gke.state import API_ROOT, link

# What GKE puts in a NodeConfig the request left unset.
_NODE_CONFIG_DEFAULTS = {
    "diskSizeGb": 100, "diskType": "pd-balanced", "imageType": "COS_CONTAINERD", "serviceAccount": "default",
    "metadata": {"disable-legacy-endpoints": "true"},
}


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def new_pool(project: str, location: str, cluster: str, pool: dict[str, Any], zones: list[str],
             groups: list[str], versions: dict[str, str]) -> dict[str, Any]:
    """`pool` as sent plus GKE's server-side fields, status PROVISIONING."""
    config = dict(_NODE_CONFIG_DEFAULTS, **pool.get("config", {}))
    config.setdefault("machineType", catalog.DEFAULT_MACHINE_TYPE)
    resource = dict(pool, config=config, locations=zones, status="PROVISIONING",
                    version=pool.get("version") or versions["node"],
                    selfLink=link(project, location, "clusters", cluster, "nodePools", pool["name"]))
    resource.setdefault("management", {"autoUpgrade": True, "autoRepair": True})
    resource.setdefault("maxPodsConstraint", {"maxPodsPerNode": "110"})
    resource.setdefault("upgradeSettings", {"maxSurge": 1, "strategy": "SURGE"})
    resource.setdefault("podIpv4CidrSize", 24)
    resource["instanceGroupUrls"] = [
        f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instanceGroupManagers/{group}-grp"
        for zone, group in zip(zones, groups, strict=True)]
    resource["etag"] = fingerprint(resource)
    return resource


def new_cluster(project: str, location: str, cluster: dict[str, Any], zones: list[str], cluster_id: str,
                created: str, versions: dict[str, str]) -> dict[str, Any]:
    """`cluster` as sent (without node pools) plus GKE's server-side fields, status PROVISIONING."""
    resource = {k: v for k, v in cluster.items() if k not in ("nodePools", "initialNodeCount", "nodeConfig")}
    resource.update(
        id=cluster_id, location=location, zone=location, locations=zones, status="PROVISIONING",
        selfLink=link(project, location, "clusters", cluster["name"]), createTime=created,
        initialClusterVersion=versions["master"], currentMasterVersion=versions["master"],
        currentNodeVersion=versions["node"],
        labelFingerprint=fingerprint(cluster.get("resourceLabels", {}))[:8])
    for key, value in (("network", "default"), ("subnetwork", "default"),
                       ("clusterIpv4Cidr", "10.80.0.0/14"), ("servicesIpv4Cidr", "34.118.224.0/20"),
                       ("loggingService", "logging.googleapis.com/kubernetes"),
                       ("monitoringService", "monitoring.googleapis.com/kubernetes")):
        resource.setdefault(key, value)
    resource["etag"] = fingerprint(resource)
    return resource


def server_config(versions: dict[str, str]) -> dict[str, Any]:
    """`GET .../serverConfig`: the versions and image types this simulated control plane offers."""
    version = versions["master"]
    channels = [{"channel": name, "defaultVersion": version, "validVersions": [version]}
                for name in ("RAPID", "REGULAR", "STABLE")]
    return {"defaultClusterVersion": version, "validNodeVersions": [versions["node"]],
            "defaultImageType": "COS_CONTAINERD", "validImageTypes": ["COS_CONTAINERD", "UBUNTU_CONTAINERD"],
            "validMasterVersions": [version], "channels": channels}


def resource_name(project: str, location: str, cluster: str, pool: str | None = None) -> str:
    """The name GKE puts in 404/409 messages (`projects/P/zones/Z/clusters/C[/nodePools/N]`)."""
    return link(project, location, "clusters", cluster, *(["nodePools", pool] if pool else [])) \
        .removeprefix(API_ROOT + "/")

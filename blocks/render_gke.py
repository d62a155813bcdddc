"""Render the GKE create-cluster and create-node-pool requests from a stack spec. Pure: no I/O.

The requests are `google.cloud.container_v1` messages equivalent to the guide's gcloud commands,
including what gcloud adds on its own and the raw API does not: the `gke-default` OAuth scopes on the
nodes, node auto-repair/auto-upgrade and surge upgrades of one node (captured from gcloud's own
request bodies; tests/unit/test_blocks_render_gke.py compares them when gcloud is installed).
Beyond gcloud we set, on purpose: owner labels on the cluster (`resource_labels`) and on the GPU
pool's VMs (`NodeConfig.resource_labels`); a VPC-native IP allocation policy and image streaming on
each pool, explicitly rather than by server default; and the GPU driver version explicitly (default
LATEST: the guide's CUDA 12.8 image needs a recent driver, and the proto says an unset version may
install none on older GKE versions).

Workload Identity Federation for GKE when the model comes from a bucket (`serving.model_source`
gs://...): the Ray pods and the staging Job read and write it as a Kubernetes service account bound
to Google IAM, which needs `workloadIdentityConfig.workloadPool = PROJECT.svc.id.goog` on the cluster
(gcloud `--workload-pool`) and `workloadMetadataConfig.mode = GKE_METADATA` on every node pool that
runs them (gcloud `--workload-metadata`; GKE gives new pools of such a cluster that mode by default,
we set it explicitly). Not for Hugging Face sources: nothing else we run calls Google APIs, and a
cluster kept from before stays usable as it is. `workload_identity_gap` says what a live cluster lacks.

`--host-maintenance-interval=PERIODIC` exists only in v1beta1 (reference/gke.md section 0.1), so
`node_pool_v1beta1_body` returns the REST JSON body of the same node pool with
`config.hostMaintenancePolicy.maintenanceInterval` added, to POST to `node_pool_v1beta1_path`.
"""

from __future__ import annotations

from typing import Any

from google.cloud.container_v1 import types as T
from google.protobuf import duration_pb2, json_format

from blocks.errors import SpecError
from blocks.labels import owner_labels
from blocks.spec import CapacityMode, GpuPoolSpec, StackSpec

# What gcloud's "gke-default" scope alias expands to (gcloud applies it when --scopes is not given).
GKE_DEFAULT_SCOPES = [
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
]
DEFAULT_POOL_NAME = "default-pool"
RESERVATION_KEY = "compute.googleapis.com/reservation-name"
# gcloud's default upgrade settings for a new pool: surge one node at a time.
SURGE_NODES = 1
_DRIVER = T.GPUDriverInstallationConfig.GPUDriverVersion


def cluster_parent(spec: StackSpec) -> str:
    """Return 'projects/P/locations/L', the parent of the cluster."""
    return f"projects/{spec.cluster.project}/locations/{spec.cluster.location}"


def cluster_path(spec: StackSpec) -> str:
    """Return 'projects/P/locations/L/clusters/C', the cluster's resource name."""
    return f"{cluster_parent(spec)}/clusters/{spec.cluster.name}"


def node_pool_path(spec: StackSpec) -> str:
    """Return the GPU node pool's resource name."""
    return f"{cluster_path(spec)}/nodePools/{spec.gpu_pool.name}"


def needs_workload_identity(spec: StackSpec) -> bool:
    """True when the stack's pods reach Google APIs as their Kubernetes service account (a gs:// model)."""
    return spec.serving.model_source.startswith("gs://")


def workload_pool(spec: StackSpec) -> str:
    """The cluster's Workload Identity pool: always `PROJECT_ID.svc.id.goog` on GKE."""
    return f"{spec.cluster.project}.svc.id.goog"


def workload_identity_gap(spec: StackSpec, cluster: T.Cluster) -> str | None:
    """What the live `cluster` lacks for the stack's Workload Identity, with the commands that add it;
    None when nothing is missing (or the stack does not need it). Pure."""
    if not needs_workload_identity(spec):
        return None
    c, pool = spec.cluster, workload_pool(spec)
    where = f"--location={c.location} --project={c.project}"
    have = cluster.workload_identity_config.workload_pool
    if have != pool:
        return (f"cluster {c.name!r} has no Workload Identity (workloadIdentityConfig.workloadPool is "
                f"{have or 'unset'}, {pool!r} wanted), which serving.model_source {spec.serving.model_source!r} "
                f"needs to read the bucket. Enable it: `gcloud container clusters update {c.name} {where} "
                f"--workload-pool={pool}`, then `gcloud container node-pools update {DEFAULT_POOL_NAME} "
                f"--cluster={c.name} {where} --workload-metadata=GKE_METADATA` (recreates the CPU node); or "
                "delete the cluster (teardown with delete_cluster_too) so the next spin-up creates it with it")
    mode = T.WorkloadMetadataConfig.Mode
    lacking = [p.name for p in cluster.node_pools if p.config.workload_metadata_config.mode != mode.GKE_METADATA]
    if lacking:
        return (f"node pool(s) {lacking} of cluster {c.name!r} do not use the GKE metadata server "
                f"(workloadMetadataConfig.mode GKE_METADATA), so pods there cannot act as their Kubernetes "
                f"service account to read {spec.serving.model_source!r}. Run `gcloud container node-pools "
                f"update {lacking[0]} --cluster={c.name} {where} --workload-metadata=GKE_METADATA` "
                "(recreates its nodes)")
    return None


def _workload_metadata(spec: StackSpec) -> T.WorkloadMetadataConfig | None:
    if not needs_workload_identity(spec):
        return None
    return T.WorkloadMetadataConfig(mode=T.WorkloadMetadataConfig.Mode.GKE_METADATA)


def create_cluster_request(spec: StackSpec, *, lease_expiry_epoch_s: int | None = None,
                           run_id: str | None = None) -> T.CreateClusterRequest:
    """Return the request of `gcloud container clusters create` with the guide's flags (pure)."""
    c = spec.cluster
    gcfs = T.GcfsConfig(enabled=True) if c.image_streaming else None
    default_pool = T.NodePool(
        name=DEFAULT_POOL_NAME, initial_node_count=c.node_count,
        config=T.NodeConfig(machine_type=c.machine_type, oauth_scopes=GKE_DEFAULT_SCOPES, gcfs_config=gcfs,
                            workload_metadata_config=_workload_metadata(spec)),
        management=T.NodeManagement(auto_repair=True, auto_upgrade=True),
        upgrade_settings=T.NodePool.UpgradeSettings(max_surge=SURGE_NODES))
    cluster = T.Cluster(
        name=c.name,
        resource_labels={**c.resource_labels,
                         **owner_labels(spec.name, lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id)},
        ip_allocation_policy=T.IPAllocationPolicy(use_ip_aliases=True),
        node_pools=[default_pool])
    if gcfs is not None:
        cluster.node_pool_defaults = T.NodePoolDefaults(
            node_config_defaults=T.NodeConfigDefaults(gcfs_config=gcfs))
    if needs_workload_identity(spec):
        cluster.workload_identity_config = T.WorkloadIdentityConfig(workload_pool=workload_pool(spec))
    if c.release_channel is not None:
        cluster.release_channel = T.ReleaseChannel(channel=T.ReleaseChannel.Channel[c.release_channel])
    if c.cluster_version is not None:
        cluster.initial_cluster_version = c.cluster_version
    if c.network is not None:
        cluster.network = c.network
    if c.subnetwork is not None:
        cluster.subnetwork = c.subnetwork
    return T.CreateClusterRequest(parent=cluster_parent(spec), cluster=cluster)


def create_node_pool_request(spec: StackSpec, *, zone: str | None = None,
                             capacity_mode: CapacityMode | str | None = None,
                             lease_expiry_epoch_s: int | None = None,
                             run_id: str | None = None) -> T.CreateNodePoolRequest:
    """Return the request of the guide's `gcloud beta container node-pools create` (pure).

    `zone` defaults to `gpu_pool.node_locations[0]` and must be it or one of `fallback_zones`;
    `capacity_mode` defaults to the first of `capacity_modes` and must be one of them. Raises
    `SpecError` otherwise. The host maintenance interval is not in v1: see `node_pool_v1beta1_body`.
    """
    pool = spec.gpu_pool
    zone, mode = _checked_choice(pool, zone, capacity_mode)
    config = T.NodeConfig(
        machine_type=pool.machine_type,
        accelerators=[T.AcceleratorConfig(
            accelerator_type=pool.accelerator_type, accelerator_count=pool.accelerator_count,
            gpu_driver_installation_config=T.GPUDriverInstallationConfig(
                gpu_driver_version=_DRIVER[pool.gpu_driver_version]))],
        oauth_scopes=GKE_DEFAULT_SCOPES,
        resource_labels=owner_labels(spec.name, lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id),
        workload_metadata_config=_workload_metadata(spec))
    if spec.cluster.image_streaming:
        config.gcfs_config = T.GcfsConfig(enabled=True)  # gcloud inherits it; explicit is equal
    if pool.gvnic:
        config.gvnic = T.VirtualNIC(enabled=True)
    if pool.local_ssd_count is not None:
        config.ephemeral_storage_local_ssd_config = T.EphemeralStorageLocalSsdConfig(
            local_ssd_count=pool.local_ssd_count)
    node_pool = T.NodePool(name=pool.name, initial_node_count=pool.node_count, locations=[zone],
                           config=config, management=T.NodeManagement(auto_repair=True, auto_upgrade=True),
                           upgrade_settings=T.NodePool.UpgradeSettings(max_surge=SURGE_NODES))
    if pool.placement_policy_name is not None:
        node_pool.placement_policy = T.NodePool.PlacementPolicy(policy_name=pool.placement_policy_name)
    _apply_capacity_mode(node_pool, pool, mode)
    return T.CreateNodePoolRequest(parent=cluster_path(spec), node_pool=node_pool)


def _checked_choice(pool: GpuPoolSpec, zone: str | None,
                    mode: CapacityMode | str | None) -> tuple[str, CapacityMode]:
    zones = [*pool.node_locations, *pool.fallback_zones]
    modes = list(pool.capacity_modes)
    chosen_zone = zone if zone is not None else zones[0]
    problems = []
    if chosen_zone not in zones:
        problems.append(f"zone: {chosen_zone!r} is not in gpu_pool.node_locations or fallback_zones; "
                        f"accepted: {zones}")
    try:
        chosen_mode = CapacityMode(mode) if mode is not None else modes[0]
    except ValueError:
        chosen_mode = None
    if chosen_mode not in modes:
        problems.append(f"capacity_mode: {mode!r} is not in gpu_pool.capacity_modes; accepted: "
                        f"{[m.value for m in modes]}")
    if problems:
        raise SpecError(problems)
    return chosen_zone, chosen_mode  # type: ignore[return-value]


def _apply_capacity_mode(node_pool: T.NodePool, pool: GpuPoolSpec, mode: CapacityMode) -> None:
    config = node_pool.config
    if mode is CapacityMode.SPOT:
        config.spot = True
    elif mode is CapacityMode.RESERVATION:
        config.reservation_affinity = T.ReservationAffinity(
            consume_reservation_type=T.ReservationAffinity.Type.SPECIFIC_RESERVATION,
            key=RESERVATION_KEY, values=[pool.reservation_name])
    elif mode in (CapacityMode.FLEX_START, CapacityMode.QUEUED):
        _apply_dws(node_pool, pool, mode)


def _apply_dws(node_pool: T.NodePool, pool: GpuPoolSpec, mode: CapacityMode) -> None:
    # Dynamic Workload Scheduler, as GKE documents it: start at 0 nodes and let the autoscaler obtain
    # all `node_count` VMs at once when the GPU workers ask for them; no reservation; no auto-repair
    # (a repaired flex-start VM would lose its capacity).
    node_pool.initial_node_count = 0
    node_pool.autoscaling = T.NodePoolAutoscaling(
        enabled=True, total_min_node_count=0, total_max_node_count=pool.node_count,
        location_policy=T.NodePoolAutoscaling.LocationPolicy.ANY)
    node_pool.management = T.NodeManagement(auto_repair=False, auto_upgrade=True)
    config = node_pool.config
    config.reservation_affinity = T.ReservationAffinity(
        consume_reservation_type=T.ReservationAffinity.Type.NO_RESERVATION)
    if mode is CapacityMode.FLEX_START:
        config.flex_start = True
    else:
        node_pool.queued_provisioning = T.NodePool.QueuedProvisioning(enabled=True)
    if pool.max_run_duration_s is not None:
        config.max_run_duration = duration_pb2.Duration(seconds=pool.max_run_duration_s)


def request_json(request: T.CreateClusterRequest | T.CreateNodePoolRequest) -> dict[str, Any]:
    """Return a request as the REST API's JSON carries it: camelCase, enum names, int64 as strings."""
    return json_format.MessageToDict(type(request).pb(request))


def node_pool_v1beta1_path(spec: StackSpec) -> str:
    """Return the v1beta1 REST path that creates the GPU pool (POST, body from `node_pool_v1beta1_body`)."""
    return f"/v1beta1/{cluster_path(spec)}/nodePools"


def node_pool_v1beta1_body(spec: StackSpec, *, zone: str | None = None,
                           capacity_mode: CapacityMode | str | None = None,
                           lease_expiry_epoch_s: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Return the v1beta1 JSON body {"nodePool": ...}: the v1 pool plus the host maintenance interval.

    v1beta1's NodePool is a superset of v1's, so the v1 JSON is valid there; only
    `config.hostMaintenancePolicy` is added, when `gpu_pool.host_maintenance_interval` is set.
    """
    request = create_node_pool_request(spec, zone=zone, capacity_mode=capacity_mode,
                                       lease_expiry_epoch_s=lease_expiry_epoch_s, run_id=run_id)
    node_pool = request_json(request)["nodePool"]
    interval = spec.gpu_pool.host_maintenance_interval
    if interval is not None:
        node_pool["config"]["hostMaintenancePolicy"] = {"maintenanceInterval": interval}
    return {"nodePool": node_pool}

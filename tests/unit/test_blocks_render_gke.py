"""GKE request renderer: equivalent to the guide's gcloud commands, strict-parseable, capacity modes."""

from __future__ import annotations

import json
import shlex

import pytest
from google.cloud.container_v1 import types as T
from google.protobuf import json_format

from blocks.errors import SpecError
from blocks.labels import is_ours
from blocks.render_gke import (
    GKE_DEFAULT_SCOPES,
    create_cluster_request,
    create_node_pool_request,
    node_pool_v1beta1_body,
    node_pool_v1beta1_path,
    request_json,
)
from blocks.spec import StackSpec

# The guide's two commands (seed/000_fc0464f8731d9aaa.txt, step 1), verbatim.
GUIDE_CLUSTER = """gcloud container clusters create kuberay-gpu-cluster \
    --location=us-east5-a \
    --machine-type=e2-standard-16 \
    --num-nodes=1 \
    --enable-image-streaming"""
GUIDE_NODE_POOL = """gcloud beta container node-pools create gpu-node-pool \
    --cluster kuberay-gpu-cluster \
    --machine-type a3-highgpu-8g \
    --num-nodes 2 \
    --accelerator "type=nvidia-h100-80gb,count=8" \
    --zone us-east5-a \
    --node-locations us-east5-a \
    --host-maintenance-interval=PERIODIC"""
PROJECT = "my-gcp-project"


def flags(command: str) -> tuple[str, dict[str, str | None]]:
    """Split a gcloud command into its positional resource name and its --flags."""
    words = shlex.split(command)
    i = words.index("create") + 1
    name = words[i]
    out: dict[str, str | None] = {}
    i += 1
    while i < len(words):
        flag, _, value = words[i].partition("=")
        if not value and i + 1 < len(words) and not words[i + 1].startswith("--"):
            value, i = words[i + 1], i + 1
        out[flag] = value or None
        i += 1
    return name, out


def default_spec() -> StackSpec:
    return StackSpec(cluster={"project": PROJECT})


def strict(request_type, request) -> None:
    """Parse the request's JSON back as the sandbox does: unknown fields are errors."""
    request_type.from_json(request_type.to_json(request), ignore_unknown_fields=False)
    request_type.from_json(json.dumps(request_json(request)), ignore_unknown_fields=False)


def test_cluster_request_matches_every_flag_of_the_guides_command():
    name, given = flags(GUIDE_CLUSTER)
    request = create_cluster_request(default_spec())
    cluster = request.cluster
    pool = cluster.node_pools[0]
    checks = {
        "--location": lambda v: request.parent == f"projects/{PROJECT}/locations/{v}",
        "--machine-type": lambda v: pool.config.machine_type == v,
        "--num-nodes": lambda v: pool.initial_node_count == int(v),
        "--enable-image-streaming": lambda v: (
            cluster.node_pool_defaults.node_config_defaults.gcfs_config.enabled
            and pool.config.gcfs_config.enabled),
    }
    assert set(given) == set(checks), "every guide flag needs a check"
    assert cluster.name == name
    for flag, value in given.items():
        assert checks[flag](value), f"{flag}={value} not reflected in the request"
    assert len(cluster.node_pools) == 1 and pool.name == "default-pool"


def test_cluster_request_adds_what_gcloud_adds():
    cluster = create_cluster_request(default_spec()).cluster
    assert list(cluster.node_pools[0].config.oauth_scopes) == GKE_DEFAULT_SCOPES
    assert cluster.ip_allocation_policy.use_ip_aliases is True
    assert cluster.node_pools[0].management.auto_repair and cluster.node_pools[0].management.auto_upgrade
    # the deprecated cluster-level node fields stay unset: the default pool carries them
    assert cluster.initial_node_count == 0 and not cluster.node_config.machine_type


def test_node_pool_request_matches_every_flag_of_the_guides_command():
    name, given = flags(GUIDE_NODE_POOL)
    request = create_node_pool_request(default_spec())
    pool, config = request.node_pool, request.node_pool.config
    accelerator = config.accelerators[0]
    body = node_pool_v1beta1_body(default_spec())
    checks = {
        "--cluster": lambda v: request.parent == f"projects/{PROJECT}/locations/us-east5-a/clusters/{v}",
        "--zone": lambda v: request.parent.startswith(f"projects/{PROJECT}/locations/{v}/"),
        "--machine-type": lambda v: config.machine_type == v,
        "--num-nodes": lambda v: pool.initial_node_count == int(v),
        "--accelerator": lambda v: v == (f"type={accelerator.accelerator_type},"
                                         f"count={accelerator.accelerator_count}"),
        "--node-locations": lambda v: list(pool.locations) == v.split(","),
        "--host-maintenance-interval": lambda v: (
            body["nodePool"]["config"]["hostMaintenancePolicy"] == {"maintenanceInterval": v}),
    }
    assert set(given) == set(checks), "every guide flag needs a check"
    assert pool.name == name
    for flag, value in given.items():
        assert checks[flag](value), f"{flag}={value} not reflected in the request"


def test_node_pool_request_adds_what_gcloud_adds():
    pool = create_node_pool_request(default_spec()).node_pool
    driver = pool.config.accelerators[0].gpu_driver_installation_config.gpu_driver_version
    assert driver == T.GPUDriverInstallationConfig.GPUDriverVersion.LATEST
    assert list(pool.config.oauth_scopes) == GKE_DEFAULT_SCOPES
    assert pool.management.auto_repair and pool.management.auto_upgrade
    assert pool.config.gcfs_config.enabled  # inherited from the cluster by gcloud; explicit here


def test_requests_carry_owner_labels_with_lease_and_run():
    spec = default_spec().updated({"cluster": {"resource_labels": {"team": "ml"}}})
    cluster = create_cluster_request(spec, lease_expiry_epoch_s=1_900_000_000, run_id="run-1").cluster
    assert is_ours(dict(cluster.resource_labels), "deepseek-r1")
    assert cluster.resource_labels["team"] == "ml"
    assert cluster.resource_labels["gke-llm-flows-lease-expiry"] == "1900000000"
    labels = dict(create_node_pool_request(spec, run_id="run-1").node_pool.config.resource_labels)
    assert is_ours(labels, "deepseek-r1") and labels["gke-llm-flows-run-id"] == "run-1"


@pytest.mark.parametrize("mode", ["on-demand", "spot", "reservation", "flex-start", "queued"])
def test_every_capacity_mode_strict_parses_as_v1(mode):
    spec = default_spec().updated({"gpu_pool": {
        "capacity_modes": ["on-demand", "spot", "reservation", "flex-start", "queued"],
        "reservation_name": "h100-res", "placement_policy_name": "a3-compact", "max_run_duration_s": 7 * 3600,
        "gvnic": True, "local_ssd_count": 16}})
    strict(T.CreateNodePoolRequest, create_node_pool_request(spec, capacity_mode=mode))


def test_strict_parsing_rejects_the_v1beta1_field():
    body = node_pool_v1beta1_body(default_spec())
    request = json.dumps({"parent": "projects/p/locations/us-east5-a/clusters/c", **body})
    with pytest.raises(json_format.ParseError, match="hostMaintenancePolicy"):
        T.CreateNodePoolRequest.from_json(request, ignore_unknown_fields=False)
    del body["nodePool"]["config"]["hostMaintenancePolicy"]
    v1_pool = request_json(create_node_pool_request(default_spec()))["nodePool"]
    assert body["nodePool"] == v1_pool  # v1beta1 body = the v1 pool + only the maintenance policy


def test_v1beta1_path_and_no_policy_when_interval_unset():
    spec = default_spec().updated({"gpu_pool": {"host_maintenance_interval": None}})
    assert "hostMaintenancePolicy" not in node_pool_v1beta1_body(spec)["nodePool"]["config"]
    assert node_pool_v1beta1_path(spec) == (
        f"/v1beta1/projects/{PROJECT}/locations/us-east5-a/clusters/kuberay-gpu-cluster/nodePools")


def test_cluster_request_strict_parses_with_every_option():
    spec = default_spec().updated({"cluster": {
        "release_channel": "STABLE", "cluster_version": "1.33", "network": "vpc-a", "subnetwork": "sub-a"}})
    request = create_cluster_request(spec)
    strict(T.CreateClusterRequest, request)
    cluster = request.cluster
    assert cluster.release_channel.channel == T.ReleaseChannel.Channel.STABLE
    assert (cluster.initial_cluster_version, cluster.network, cluster.subnetwork) == ("1.33", "vpc-a", "sub-a")


def test_without_image_streaming_no_gcfs_is_requested():
    spec = default_spec().updated({"cluster": {"image_streaming": False}})
    cluster_json = request_json(create_cluster_request(spec))
    pool_json = request_json(create_node_pool_request(spec))
    assert "gcfsConfig" not in json.dumps(cluster_json) and "gcfsConfig" not in json.dumps(pool_json)


def test_spot_and_reservation_modes():
    spec = default_spec().updated({"gpu_pool": {"capacity_modes": ["reservation", "spot"],
                                                "reservation_name": "h100-res"}})
    reserved = create_node_pool_request(spec).node_pool.config  # first mode by default
    assert reserved.reservation_affinity.consume_reservation_type == \
        T.ReservationAffinity.Type.SPECIFIC_RESERVATION
    assert reserved.reservation_affinity.key == "compute.googleapis.com/reservation-name"
    assert list(reserved.reservation_affinity.values) == ["h100-res"] and not reserved.spot
    spot = create_node_pool_request(spec, capacity_mode="spot").node_pool.config
    assert spot.spot and not spot.reservation_affinity.values


@pytest.mark.parametrize("mode", ["flex-start", "queued"])
def test_dws_modes_start_at_zero_and_autoscale_to_node_count(mode):
    spec = default_spec().updated({"gpu_pool": {"capacity_modes": [mode], "max_run_duration_s": 3600}})
    pool = create_node_pool_request(spec).node_pool
    assert pool.initial_node_count == 0
    assert pool.autoscaling.enabled and pool.autoscaling.total_max_node_count == 2
    assert pool.autoscaling.location_policy == T.NodePoolAutoscaling.LocationPolicy.ANY
    assert pool.config.reservation_affinity.consume_reservation_type == T.ReservationAffinity.Type.NO_RESERVATION
    assert not pool.management.auto_repair
    assert request_json(create_node_pool_request(spec))["nodePool"]["config"]["maxRunDuration"] == "3600s"
    assert pool.config.flex_start is (mode == "flex-start")
    assert pool.queued_provisioning.enabled is (mode == "queued")


def test_placement_policy_gvnic_and_local_ssd():
    spec = default_spec().updated({"gpu_pool": {"placement_policy_name": "a3-compact", "gvnic": True,
                                                "local_ssd_count": 16}})
    pool = create_node_pool_request(spec).node_pool
    assert pool.placement_policy.policy_name == "a3-compact"
    assert pool.config.gvnic.enabled
    assert pool.config.ephemeral_storage_local_ssd_config.local_ssd_count == 16


def test_fallback_zone_moves_the_pool():
    spec = default_spec().updated({"gpu_pool": {"fallback_zones": ["us-east5-b", "us-east5-c"]}})
    assert list(create_node_pool_request(spec, zone="us-east5-c").node_pool.locations) == ["us-east5-c"]
    # the pool still belongs to the zonal cluster in us-east5-a
    assert "/locations/us-east5-a/" in create_node_pool_request(spec, zone="us-east5-c").parent


def test_zone_and_mode_outside_the_spec_are_rejected_by_name():
    with pytest.raises(SpecError) as info:
        create_node_pool_request(default_spec(), zone="us-east5-b", capacity_mode="spot")
    assert info.value.problems == [
        "zone: 'us-east5-b' is not in gpu_pool.node_locations or fallback_zones; accepted: ['us-east5-a']",
        "capacity_mode: 'spot' is not in gpu_pool.capacity_modes; accepted: ['on-demand']",
    ]
    with pytest.raises(SpecError, match="capacity_mode: 'cheap'"):
        create_node_pool_request(default_spec(), capacity_mode="cheap")


def test_rest_json_is_camel_case_with_int64_as_strings():
    pool_json = request_json(create_node_pool_request(default_spec()))["nodePool"]
    assert pool_json["initialNodeCount"] == 2
    assert pool_json["config"]["accelerators"][0]["acceleratorCount"] == "8"
    assert pool_json["config"]["accelerators"][0]["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"}


@pytest.mark.parametrize("mode", ["on-demand", "spot", "reservation", "flex-start", "queued"])
def test_v1beta1_body_strict_parses_as_v1beta1(mode):
    from google.cloud.container_v1beta1 import types as B

    spec = default_spec().updated({"gpu_pool": {
        "capacity_modes": ["on-demand", "spot", "reservation", "flex-start", "queued"],
        "reservation_name": "h100-res", "placement_policy_name": "a3-compact", "gvnic": True,
        "local_ssd_count": 16}})
    body = {"parent": "projects/p/locations/us-east5-a/clusters/c",
            **node_pool_v1beta1_body(spec, capacity_mode=mode)}
    request = B.CreateNodePoolRequest.from_json(json.dumps(body), ignore_unknown_fields=False)
    assert request.node_pool.config.host_maintenance_policy.maintenance_interval == \
        B.HostMaintenancePolicy.MaintenanceInterval.PERIODIC

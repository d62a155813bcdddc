"""Workload Identity for gs:// model sources: the requests, the sandbox GKE's answers, a warm cluster without it."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.cloud.container_v1 import types as T

from blocks.render_gke import (
    create_cluster_request,
    create_node_pool_request,
    request_json,
    workload_identity_gap,
)
from blocks.spec import StackSpec
from tasks.clock import ScaledClock
from tasks.cluster import cluster_ref, ensure_cluster
from tasks.node_pool import ensure_gpu_node_pool
from tests.integration.gke_support import PROJECT, TIME_SCALE, connect, make_spec

BUCKET = "gs://team-weights/deepseek-ai/DeepSeek-R1"
GKE_METADATA = T.WorkloadMetadataConfig.Mode.GKE_METADATA


def staged(spec: StackSpec) -> StackSpec:
    return spec.updated({"serving": {"model_source": BUCKET, "staged_from": "deepseek-ai/DeepSeek-R1"}})


def plain(project: str = "my-project", **serving) -> StackSpec:
    return StackSpec.parse({"name": "s", "cluster": {"project": project}, "serving": serving})


def test_a_gs_source_asks_for_the_project_pool_and_the_gke_metadata_server_everywhere():
    spec = plain(model_source=BUCKET)
    cluster = request_json(create_cluster_request(spec))["cluster"]
    assert cluster["workloadIdentityConfig"] == {"workloadPool": "my-project.svc.id.goog"}
    assert cluster["nodePools"][0]["config"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    pool = request_json(create_node_pool_request(spec))["nodePool"]
    assert pool["config"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}


def test_a_hugging_face_source_leaves_the_requests_as_they_were():
    spec = plain()
    cluster = request_json(create_cluster_request(spec))["cluster"]
    assert "workloadIdentityConfig" not in cluster
    assert "workloadMetadataConfig" not in cluster["nodePools"][0]["config"]
    assert "workloadMetadataConfig" not in request_json(create_node_pool_request(spec))["nodePool"]["config"]
    assert workload_identity_gap(spec, T.Cluster(name="s")) is None


def test_the_sandbox_echoes_workload_identity_and_the_pools_run_the_metadata_server(sandbox, clock):
    spec = staged(make_spec(sandbox))
    gke = connect(spec, clock)
    live = ensure_cluster.fn(gke, spec, clock=clock).live
    assert live.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    assert live.node_pools[0].config.workload_metadata_config.mode == GKE_METADATA
    pool = ensure_gpu_node_pool.fn(gke, spec, clock=clock).live
    assert pool.config.workload_metadata_config.mode == GKE_METADATA
    assert workload_identity_gap(spec, gke.get_cluster(cluster_ref(spec))) is None


def test_a_warm_cluster_without_it_gets_the_commands_that_add_it(sandbox, clock):
    spec = make_spec(sandbox)                         # created from a Hugging Face stack: no Workload Identity
    gke = connect(spec, clock)
    live = ensure_cluster.fn(gke, spec, clock=clock).live
    assert not live.workload_identity_config.workload_pool
    gap = workload_identity_gap(staged(spec), live)
    assert f"--workload-pool={PROJECT}.svc.id.goog" in gap
    assert f"gcloud container clusters update {spec.cluster.name} --location=us-east5-a" in gap
    assert "--workload-metadata=GKE_METADATA" in gap and BUCKET in gap
    # and GKE itself would refuse the GPU pool such a stack asks for
    with pytest.raises(gexc.BadRequest, match="needs Workload Identity on the cluster"):
        gke._client.create_node_pool(request=create_node_pool_request(staged(spec)))


def test_a_pool_left_on_the_node_metadata_is_named(sandbox, clock):
    spec = staged(make_spec(sandbox))
    live = T.Cluster(name=spec.cluster.name,
                     workload_identity_config=T.WorkloadIdentityConfig(workload_pool=f"{PROJECT}.svc.id.goog"),
                     node_pools=[T.NodePool(name="default-pool", config=T.NodeConfig(
                         workload_metadata_config=T.WorkloadMetadataConfig(
                             mode=T.WorkloadMetadataConfig.Mode.GCE_METADATA)))])
    gap = workload_identity_gap(spec, live)
    assert "['default-pool']" in gap and "node-pools update default-pool" in gap


def test_the_sandbox_refuses_another_projects_pool(sandbox):
    spec = staged(make_spec(sandbox))
    request = create_cluster_request(spec)
    request.cluster.workload_identity_config.workload_pool = "other-project.svc.id.goog"
    gke = connect(spec, ScaledClock(TIME_SCALE))
    with pytest.raises(gexc.BadRequest, match=f"must be \"{PROJECT}.svc.id.goog\""):
        gke._client.create_cluster(request=request)

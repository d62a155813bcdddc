"""The janitor on a real Prefect server and the sandbox: leases, dead runs, foreign resources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from prefect.client.orchestration import get_client
from prefect.states import Crashed

from blocks import labels as owner
from flows.demo import still_billing
from flows.janitor import janitor
from flows.locks import stack_lock
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef, load_stack
from tasks.capacity import ensure_gpu_capacity
from tasks.clock import clock_from_env
from tasks.cluster import cluster_ref, ensure_cluster
from tasks.gateways.gke import GkeGateway
from tasks.gke_credentials import gke_credentials

pytestmark = pytest.mark.usefixtures("prefect_server")


def _with_lifecycle(stack: StackRef, **lifecycle) -> StackRef:
    data = yaml.safe_load(Path(stack.file).read_text())
    data["lifecycle"].update(lifecycle)
    Path(stack.file).write_text(yaml.safe_dump(data))
    return stack


def _gke(stack: StackRef) -> GkeGateway:
    spec = load_stack(stack).spec
    return GkeGateway.connect(gke_credentials(None, api_endpoint=spec.cluster.api_endpoint),
                              api_endpoint=spec.cluster.api_endpoint, clock=clock_from_env())


def test_the_janitor_reclaims_a_stack_past_its_lease_and_keeps_a_live_one(sandbox_stack):
    sandbox, stack = sandbox_stack
    _with_lifecycle(stack, lease_s=8 * 3600)
    started = clock_from_env().time()
    serve_llm(stack=stack, lease_s=13 * 3600)            # as the weekday schedule passes its working day
    labels = _gke(stack).get_cluster(cluster_ref(load_stack(stack).spec)).resource_labels
    assert 13 * 3600 <= int(labels[owner.LEASE_EXPIRY_KEY]) - started < 14 * 3600   # not the stack's 8 h

    kept = janitor(stacks=[stack])
    assert [f["action"] for f in kept["findings"]] == ["kept"]
    assert still_billing(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool"]

    # Hours later: the labels are what the janitor reads. Stamp the lease the spin-up would have
    # written eight hours ago (the ensure tasks update labels in place, no new resources).
    spec, clock, gke = load_stack(stack).spec, clock_from_env(), _gke(stack)
    expired = int(clock.time()) - 1
    ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=expired)
    ensure_gpu_capacity.fn(gke, spec, clock=clock, lease_expiry_epoch_s=expired)
    swept = janitor(stacks=[stack])
    assert [(f["action"], f["reason"].startswith("lease expired")) for f in swept["findings"]] == [("reclaimed", True)]
    assert still_billing(sandbox.inventory()) == []
    # The stack's policy keeps the cluster (warm mode); only what bills for GPUs is gone.
    assert [c["name"] for c in sandbox.inventory()["clusters"]] == ["kuberay-gpu-cluster"]


def test_the_janitor_reclaims_what_a_crashed_run_left_and_never_touches_foreign_clusters(sandbox_stack):
    sandbox, stack = sandbox_stack
    _leftovers_of_a_crashed_run(stack)
    _foreign_clusters(sandbox)

    preview = janitor(stacks=[stack], dry_run=True)
    assert {f["cluster"]: f["action"] for f in preview["findings"]} == {
        "kuberay-gpu-cluster": "would reclaim", "other-stack": "left alone"}
    assert still_billing(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool"]

    swept = janitor(stacks=[stack])
    reasons = {f["cluster"]: f["reason"] for f in swept["findings"]}
    assert reasons["kuberay-gpu-cluster"] == "its spin-up run ended CRASHED"
    assert "not one of the janitor's stacks" in reasons["other-stack"]
    assert still_billing(sandbox.inventory()) == []
    names = sorted(c["name"] for c in sandbox.inventory()["clusters"])
    assert names == ["kuberay-gpu-cluster", "not-ours", "other-stack"]
    deletes = [r["path"] for r in sandbox.requests() if r["method"] == "DELETE"]
    assert not [p for p in deletes if "not-ours" in p or "other-stack" in p]


def test_the_janitor_leaves_a_stack_whose_lock_is_held_then_reclaims_it_once_free(sandbox_stack):
    sandbox, stack = sandbox_stack
    _leftovers_of_a_crashed_run(stack)
    with stack_lock(load_stack(stack).spec.name, timeout_s=10):   # a spin-down of the stack is running
        busy = janitor(stacks=[stack])
    assert [f["action"] for f in busy["findings"]] == ["busy"]
    assert "holds its lock" in busy["findings"][0]["reason"]
    assert still_billing(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool"]
    assert not [r for r in sandbox.requests() if r["method"] == "DELETE"]

    swept = janitor(stacks=[stack])
    assert [f["action"] for f in swept["findings"]] == ["reclaimed"]
    assert still_billing(sandbox.inventory()) == []


def _leftovers_of_a_crashed_run(stack: StackRef) -> None:
    """What a spin-up had created before its host died (the cluster and the GPU pool), its run Crashed."""
    spec, clock = load_stack(stack).spec, clock_from_env()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(serve_llm, parameters={"stack": stack.model_dump()})
        client.set_flow_run_state(run.id, Crashed(message="host lost"), force=True)
    gke, lease = _gke(stack), int(clock.time() + 8 * 3600)
    ensure_cluster.fn(gke, spec, clock=clock, lease_expiry_epoch_s=lease, run_id=str(run.id))
    ensure_gpu_capacity.fn(gke, spec, clock=clock, lease_expiry_epoch_s=lease, run_id=str(run.id))


def _foreign_clusters(sandbox) -> None:
    client = container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                               client_options={"api_endpoint": sandbox.gke_url})
    parent = "projects/sandbox-project/locations/us-east5-a"
    for name, labels in (("not-ours", {}), ("other-stack", {"managed-by": "gke-llm-flows",
                                                             "gke-llm-flows-stack": "someone-else",
                                                             "gke-llm-flows-lease-expiry": "1"})):
        client.create_cluster(parent=parent, cluster=container_v1.Cluster(
            name=name, resource_labels=labels, node_pools=[container_v1.NodePool(
                name="default-pool", initial_node_count=1,
                config=container_v1.NodeConfig(machine_type="e2-standard-4"))]))

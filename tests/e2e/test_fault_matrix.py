"""The fault matrix in CI (a representative subset at a high time scale), ownership refusals, and the
dry-run plan, on a real Prefect server and the sandbox."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from bench import measure
from bench.faults import run_matrix, summary_line
from bench.scenarios import all_scenarios
from blocks.spec import StackSpec
from flows.__main__ import main as flows_main
from flows.demo import demo_stack_file
from flows.janitor import janitor
from flows.spin_down import TeardownIncomplete, teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef
from tasks.capacity import ensure_gpu_capacity
from tasks.clock import TIME_SCALE_ENV, ScaledClock, clock_from_env
from tasks.cluster import ensure_cluster
from tasks.gateways.gke import GkeGateway
from tasks.gke_credentials import gke_credentials

pytestmark = pytest.mark.usefixtures("prefect_server")
TIME_SCALE = 100.0
# The CI subset: one of each kind of driver and failure family (the full matrix: python -m bench.faults).
CI_SCENARIOS = ("baseline", "kill-up@model-loading+rerun", "kill-runner@pool-creating+janitor",
                "stockout-first-zone", "k8s-oom_killed", "spin-down-during-spin-up")


@pytest.fixture
def fast_sandbox(tmp_path, monkeypatch):
    """A sandbox on the fast profile at 100x, the flows' clock agreeing, and a stack file aimed at it."""
    from sandbox.app import Sandbox

    with Sandbox(time_scale=TIME_SCALE, kubernetes=True, profile="fast") as sandbox:
        monkeypatch.setenv(TIME_SCALE_ENV, ScaledClock(TIME_SCALE, anchor_epoch_s=sandbox.clock.anchor_epoch_s).to_env())
        yield sandbox, demo_stack_file(sandbox.gke_url, tmp_path)


def _variant(path: Path, name: str, **sections) -> StackRef:
    data = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    variant = path.with_name(f"{name}.yaml")
    variant.write_text(yaml.safe_dump(data))
    return StackRef(file=str(variant))


def _gke(spec: StackSpec) -> GkeGateway:
    endpoint = spec.cluster.api_endpoint
    return GkeGateway.connect(gke_credentials(None, api_endpoint=endpoint), api_endpoint=endpoint,
                              clock=clock_from_env())


def _writes(sandbox, spec: StackSpec, since: int) -> list[str]:
    gke = [f"{r['method']} {r['path']}" for r in sandbox.requests()[since:] if r["method"] in measure.WRITE_METHODS]
    kube = [f"{r['method']} {r['path']}" for r in measure.kube_requests(sandbox, spec)
            if r["method"] in measure.WRITE_METHODS]
    return gke + kube


@pytest.mark.timeout(900)    # about 3 minutes alone; a loaded 2-core machine needs more
def test_the_ci_subset_of_the_fault_matrix_converges_with_no_leak_duplicate_or_foreign_touch():
    scenarios = [s for s in all_scenarios() if s.name in CI_SCENARIOS]
    assert len(scenarios) == len(CI_SCENARIOS)
    out = io.StringIO()
    outcomes = run_matrix(scenarios, time_scale=TIME_SCALE, profile="fast", out=out)
    line = summary_line(outcomes)
    print(out.getvalue() + line)
    assert line.startswith(f"scenarios={len(CI_SCENARIOS)} converged={len(CI_SCENARIOS)} "
                           "leaked_gpu_node_seconds=0 duplicates=0 foreign_touched=0 "), out.getvalue() + line
    by_name = {o.scenario: o for o in outcomes}
    assert by_name["baseline"].outcome == "healthy"
    assert by_name["stockout-first-zone"].outcome == "healthy"          # fell back to the second zone
    assert by_name["k8s-oom_killed"].outcome == "torn-down"
    assert by_name["k8s-oom_killed"].teardown_delay_s is not None
    assert by_name["kill-up@model-loading+rerun"].outcome == "healthy"      # the rerun converged
    assert by_name["kill-runner@pool-creating+janitor"].outcome == "torn-down"
    assert by_name["spin-down-during-spin-up"].outcome == "healthy"      # the spin-down waited its turn


def test_flows_and_the_janitor_refuse_foreign_resources_and_say_why(fast_sandbox):
    sandbox, path = fast_sandbox
    ours = StackSpec.from_yaml(path)
    measure.place_foreign_clusters(sandbox, ours)
    ensure_cluster.fn(_gke(ours), ours, clock=clock_from_env())
    measure.place_foreign_pool(sandbox, ours)
    since = len(sandbox.requests())

    with pytest.raises(TeardownIncomplete, match=r"cluster 'not-ours' exists without our owner labels"):
        teardown_llm(stack=_variant(path, "foreign", cluster={"name": measure.FOREIGN_CLUSTER}),
                     delete_cluster_too=True)
    with pytest.raises(TeardownIncomplete, match=r"belongs to stack 'someone-else', not 'deepseek-r1'"):
        teardown_llm(stack=_variant(path, "other", cluster={"name": measure.OTHER_STACK_CLUSTER}),
                     delete_cluster_too=True)
    with pytest.raises(TeardownIncomplete, match=r"node pool 'foreign-pool' exists without our owner labels"):
        teardown_llm(stack=_variant(path, "pool", gpu_pool={"name": measure.FOREIGN_POOL}))
    with pytest.raises(TeardownIncomplete, match=r"holds node pool\(s\) \['foreign-pool'\] without our owner"):
        teardown_llm(stack=StackRef(file=str(path)), delete_cluster_too=True)
    state = serve_llm(stack=_variant(path, "up-foreign", cluster={"name": measure.FOREIGN_CLUSTER}),
                      return_state=True)
    assert state.is_failed() and "without our owner labels" in state.message
    swept = janitor(stacks=[StackRef(file=str(path))])
    left = {f["cluster"]: f for f in swept["findings"]}
    assert left[measure.OTHER_STACK_CLUSTER]["action"] == "left alone"
    assert "not one of the janitor's stacks" in left[measure.OTHER_STACK_CLUSTER]["reason"]
    assert measure.FOREIGN_CLUSTER not in left

    assert measure.foreign_touched(sandbox.requests(), ours, since_seq=since) == []
    assert measure.foreign_missing(sandbox.inventory(), ours, pool_placed=True) == []


def test_the_dry_run_prints_the_plan_and_makes_no_write_request(fast_sandbox, capsys):
    sandbox, path = fast_sandbox
    spec = StackSpec.from_yaml(path)
    since = len(sandbox.requests())
    assert flows_main(["up", "--dry-run", "--stack", str(path)]) == 0
    cold = capsys.readouterr().out
    assert "  create  cluster projects/sandbox-project/locations/us-east5-a/clusters/kuberay-gpu-cluster" in cold
    assert "  create  rayservice default/deepseek-r1" in cold and "4 change(s) planned" in cold
    assert _writes(sandbox, spec, since) == [] and sandbox.inventory()["clusters"] == []

    gke = _gke(spec)
    ensure_cluster.fn(gke, spec, clock=clock_from_env())
    ensure_gpu_capacity.fn(gke, spec, clock=clock_from_env())
    measure.place_foreign_pool(sandbox, spec)
    since = len(sandbox.requests())
    assert flows_main(["up", "--dry-run", "--stack", str(path)]) == 0
    warm = capsys.readouterr().out
    assert "    keep  node pool" in warm and "  create  kuberay operator v1.7.0" not in warm
    assert flows_main(["down", "--dry-run", "--delete-cluster", "--stack", str(path)]) == 0
    down = capsys.readouterr().out
    assert "  delete  node pool projects/sandbox-project/locations/us-east5-a/clusters/kuberay-gpu-cluster/" \
           "nodePools/gpu-node-pool" in down
    assert "  refuse  cluster" in down and "['foreign-pool']" in down
    assert _writes(sandbox, spec, since) == []
    assert measure.gpu_vms_running(sandbox.inventory()) == ["kuberay-gpu-cluster/gpu-node-pool x2"]

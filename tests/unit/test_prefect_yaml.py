"""deployments/prefect.yaml: deployable as written, in step with the catalog and with serve()."""

from __future__ import annotations

import inspect
import os
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect.events import DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate
from pydantic import TypeAdapter

from deployments.catalog import AFTER_CRASH, ON_CHANGE, SPIN_UP
from deployments.events import model_published_event
from deployments.render import DEFAULT_TARGET, PREFECT_YAML, render_text
from deployments.serve import build_deployments
from deployments.setup import zombie_automation

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
DEPLOYMENTS = {d["name"]: d for d in CONFIG["deployments"]}


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _flow(deployment):
    return load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))


def _template_params(deployment) -> set[str]:
    keys = set()
    for schedule in deployment["schedules"]:
        keys |= set(schedule.get("parameters", {}))
    for trigger in deployment["triggers"]:
        keys |= set(trigger.get("parameters", {}))
    return keys


def test_the_committed_prefect_yaml_is_what_the_catalog_renders():
    assert PREFECT_YAML.read_text(encoding="utf-8") == render_text(), "run: python -m deployments.render"


def test_no_absolute_path_of_any_machine_is_baked_in():
    for text in _strings(CONFIG):
        assert not os.path.isabs(text), f"absolute path in prefect.yaml: {text!r}"
        assert not re.search(r"(^|[\s'\"=])/(work|home|Users|tmp|srv|opt)/", text), text
    pull = CONFIG["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert pull == "{{ $GKE_LLM_FLOWS_DIR }}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_entrypoint_resolves_to_a_flow_relative_to_the_project_root(name):
    deployment = DEPLOYMENTS[name]
    path, _, function = deployment["entrypoint"].partition(":")
    assert not os.path.isabs(path) and (ROOT / path).is_file()
    flow = _flow(deployment)
    assert flow.fn.__name__ == function


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_default_parameters_validate_against_the_flow_signature_as_the_server_would(name):
    deployment = DEPLOYMENTS[name]
    flow = _flow(deployment)
    flow.validate_parameters(deployment["parameters"])               # what the flow run does at start
    validate(deployment["parameters"], parameter_schema(flow).model_dump_for_openapi(),
             raise_on_error=True, ignore_required=False)             # what the server does at creation
    # Unknown keys pass the server's check and crash the run at start: none may appear anywhere.
    known = set(inspect.signature(flow.fn).parameters)
    assert set(deployment["parameters"]) | _template_params(deployment) <= known


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_schedules_carry_a_real_timezone_and_triggers_parse_as_prefect_deploy_reads_them(name):
    deployment = DEPLOYMENTS[name]
    for schedule in deployment["schedules"]:
        if "cron" in schedule:
            assert ZoneInfo(schedule["timezone"])
    for trigger in deployment["triggers"]:
        TypeAdapter(DeploymentTriggerTypes).validate_python(dict(trigger))
    assert deployment["concurrency_limit"]["limit"] == 1
    assert deployment["enforce_parameter_schema"] is True


def test_lifecycle_deployments_wait_for_each_other_and_the_weekday_schedules_are_set():
    assert DEPLOYMENTS[SPIN_UP]["schedules"][0]["cron"].endswith("* * 1-5")
    assert DEPLOYMENTS["spin-down"]["schedules"][0]["cron"].endswith("* * 1-5")
    assert DEPLOYMENTS["sweep"]["schedules"][0]["interval"] <= 600
    for name in (SPIN_UP, "spin-down", AFTER_CRASH, ON_CHANGE):
        assert DEPLOYMENTS[name]["concurrency_limit"]["collision_strategy"] == "ENQUEUE"


def test_the_crash_chain_passes_the_crashed_runs_stack_and_fires_on_crashed_failed_and_timed_out():
    trigger, _ = DEPLOYMENTS[AFTER_CRASH]["triggers"]
    assert set(trigger["expect"]) == {"prefect.flow-run.Crashed", "prefect.flow-run.Failed",
                                      "prefect.flow-run.TimedOut"}
    assert trigger["parameters"]["stack"]["value"]["template"] == "{{ flow_run.parameters.stack | tojson }}"
    assert {"prefect.resource.role": "deployment", "prefect.resource.name": SPIN_UP} in trigger["match_related"]


def test_a_crashed_spin_down_is_run_again_by_the_after_crash_deployment_and_cannot_loop():
    _, trigger = DEPLOYMENTS[AFTER_CRASH]["triggers"]
    assert trigger["expect"] == ["prefect.flow-run.Crashed"]
    assert {"prefect.resource.role": "deployment", "prefect.resource.name": "spin-down"} in trigger["match_related"]
    assert AFTER_CRASH not in {m["prefect.resource.name"] for m in trigger["match_related"]}
    assert set(trigger["parameters"]) == {"stack", "delete_cluster_too", "reason"}   # no after_run: no keep


def test_event_templates_only_use_payload_keys_of_the_documented_contract():
    contract = set(model_published_event("deepseek-r1", "org/model")["payload"])
    used = set()
    for trigger in DEPLOYMENTS[ON_CHANGE]["triggers"]:
        for text in _strings(trigger["parameters"]):
            used |= set(re.findall(r"event\.payload\.(\w+)", text))
    assert used == contract == {"model_source"}


def test_a_malformed_model_source_is_refused_before_it_is_emitted():
    with pytest.raises(ValueError, match="'no spaces allowed'"):
        model_published_event("deepseek-r1", "no spaces allowed")


def test_serve_builds_the_same_deployments_as_prefect_yaml():
    served = {d.name: d for d in build_deployments(DEFAULT_TARGET)}
    assert set(served) == set(DEPLOYMENTS)
    adapter = TypeAdapter(DeploymentTriggerTypes)
    for name, d in served.items():
        wanted = DEPLOYMENTS[name]
        assert (d.entrypoint, d.parameters) == (wanted["entrypoint"], wanted["parameters"])
        assert [(s.schedule.model_dump(exclude={"anchor_date"}), s.active) for s in d.schedules] == [
            (_schedule_fields(s), s["active"]) for s in wanted["schedules"]]
        assert [t.model_dump() for t in d.triggers] == [adapter.validate_python(dict(t)).model_dump()
                                                        for t in wanted["triggers"]]
        assert d.concurrency_limit == wanted["concurrency_limit"]["limit"]
        assert d.concurrency_options.collision_strategy.value == wanted["concurrency_limit"]["collision_strategy"]


def _schedule_fields(spec: dict) -> dict:
    """The schedule `prefect deploy` would store for a prefect.yaml entry (anchor aside)."""
    if "cron" in spec:
        return {"cron": spec["cron"], "timezone": spec["timezone"], "day_or": True}
    return {"interval": timedelta(seconds=spec["interval"]), "timezone": "UTC"}


def test_a_zombie_window_shorter_than_two_heartbeats_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"zombie window 75s .* \(180s each"):
        zombie_automation(75, heartbeat_s=180)
    automation = zombie_automation(720, heartbeat_s=180)
    assert automation.trigger.within.total_seconds() == 720


def test_serve_from_a_stack_file_targets_the_file_by_absolute_path_without_a_block_trigger(monkeypatch):
    from deployments.serve import stack_target

    monkeypatch.chdir(ROOT)
    target = stack_target(stack_file="examples/sandbox.yaml", block_name=None)
    assert target.stack == {"file": str(ROOT / "examples" / "sandbox.yaml")}   # runs may start elsewhere
    assert (target.name, target.timezone, target.block_name) == ("deepseek-r1", "UTC", None)
    redeploy = next(d for d in build_deployments(target) if d.name == ON_CHANGE)
    assert [t.expect for t in redeploy.triggers] == [{"gke-llm-flows.model.published"}]


@pytest.mark.parametrize("passed, expected", [({}, None), ({"delete_cluster_too": True}, True)])
def test_the_crashed_spin_down_rerun_renders_the_runs_stack_and_cluster_choice(passed, expected):
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from flows.spin_down import teardown_llm

    _, trigger = DEPLOYMENTS[AFTER_CRASH]["triggers"]
    params = dict(trigger["parameters"])
    RunDeployment._upgrade_v1_templates(params)
    crashed = FlowRun(name="brave-otter", flow_id=uuid4(),
                      parameters={"stack": {"block_name": "my-stack"}, "reason": "weekday spin-down schedule", **passed})
    rendered = hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True,
                                                jinja_context={"flow_run": crashed}))
    assert rendered == {"stack": {"block_name": "my-stack"}, "delete_cluster_too": expected,
                        "reason": "spin-down run brave-otter ended Crashed"}
    assert teardown_llm.validate_parameters(rendered)["delete_cluster_too"] is expected


def test_the_scheduled_spin_up_lives_until_the_scheduled_spin_down_before_the_janitor_may_take_it():
    from deployments.catalog import SPIN_DOWN

    up_hour = int(DEPLOYMENTS[SPIN_UP]["schedules"][0]["cron"].split()[1])
    down_hour = int(DEPLOYMENTS[SPIN_DOWN]["schedules"][0]["cron"].split()[1])
    lease_s = DEPLOYMENTS[SPIN_UP]["parameters"]["lease_s"]
    assert (down_hour - up_hour) * 3600 < lease_s <= (down_hour - up_hour + 2) * 3600

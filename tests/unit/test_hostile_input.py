"""Hostile and wrong input, fuzzed: the stack spec, the flows' parameters and the event payloads that
trigger a redeploy. Every case is rejected before any API call with an error naming the field, or is
accepted and then travels as plain data (no YAML, shell or template structure injected).

No API is called here: the checks are the spec's own validation, Prefect's parameter validation of
our flows, and Prefect's own trigger templating (the code the server runs) followed by the JSON-schema
check the server applies when it creates the run.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.exceptions import ParameterTypeError
from prefect.server.events.actions import RunDeployment
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.utilities.schema_tools import ValidationError as SchemaValidationError
from prefect.utilities.schema_tools import validate
from prefect.utilities.schema_tools.hydration import HydrationContext, HydrationError, hydrate
from pydantic import ValidationError

from blocks.errors import SpecError
from blocks.render_gke import create_cluster_request, create_node_pool_request
from blocks.render_rayservice import hf_token_secret_manifest, ray_service_manifest, serve_config
from blocks.spec import CapacityMode, StackSpec
from deployments.catalog import model_published_trigger
from deployments.events import MODEL_PUBLISHED, stack_resource_id
from flows.redeploy import redeploy_llm
from flows.spin_down import teardown_llm
from flows.spin_up import serve_llm
from flows.stack_ref import StackRef

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sandbox.yaml"
CASES: Counter[str] = Counter()

METACHARACTERS = [
    "; rm -rf /", "$(id)", "`id`", "a|b", "a && b", "x\ny: 1", "key: value", "- item", "{a: 1}", "[1, 2]",
    "*anchor", "&anchor x", "!!python/object/apply:os.system ['id']", "'quoted'", '"dq"', "\x00", "\r\n",
    "../../etc/passwd", "{{ 7*7 }}", "{% for x in range(9) %}x{% endfor %}", "${HOME}", "%(name)s", "%s%s",
    "\u202egnp.exe", "ø-ü", " lead", "trail ", "#comment", "null", "~", "yes", "0x1F", "1e309", "<script>",
    "{{ event.payload }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}",
]
HOSTILE = st.one_of(
    st.sampled_from(METACHARACTERS),
    st.builds(lambda a, m, b: a + m + b, st.text(max_size=8), st.sampled_from(METACHARACTERS), st.text(max_size=8)),
    st.integers(min_value=2, max_value=5).map(lambda e: "a" * 10 ** e),           # up to 100 kB
    st.text(max_size=40),
    st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
SPEC_FIELDS = [
    "name", "cluster.project", "cluster.location", "cluster.name", "cluster.machine_type", "cluster.network",
    "cluster.api_endpoint", "cluster.resource_labels", "cluster.node_count", "cluster.adopt_existing",
    "gpu_pool.name", "gpu_pool.machine_type", "gpu_pool.accelerator_type", "gpu_pool.node_count",
    "gpu_pool.node_locations", "gpu_pool.capacity_modes", "gpu_pool.reservation_name", "gpu_pool.fallback_zones",
    "operator.version", "operator.namespace", "serving.ray_service_name", "serving.namespace", "serving.model_id",
    "serving.model_source", "serving.ray_image", "serving.runtime_env_vars", "serving.worker_replicas",
    "serving.hf_token_secret_name", "serving.hf_token_secret_key", "serving.head_resources.memory",
    "validation.prompt", "validation.expected_pattern", "validation.base_url", "validation.temperature",
    "lifecycle.schedule_timezone", "lifecycle.lease_s", "lifecycle.price_source", "timeouts.model_load_s",
]
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _quiet_parameter_errors():
    """Prefect logs every rejected parameter set at ERROR (with the 100 kB value): keep the output readable."""
    logger = logging.getLogger("prefect.flows")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def _base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


def _round_trips(obj) -> bool:
    """True when `obj` is plain data: it survives JSON and YAML dumps unchanged (no structure injected)."""
    return json.loads(json.dumps(obj)) == obj and yaml.safe_load(yaml.safe_dump(obj)) == obj


@FAST
@given(field=st.sampled_from(SPEC_FIELDS), value=HOSTILE)
def test_a_hostile_spec_value_is_rejected_naming_its_field_or_rendered_as_plain_data(field, value):
    CASES["stack spec"] += 1
    try:
        spec = StackSpec.parse(_set(_base(), field, value))
    except SpecError as e:
        # Named first, or (a cross-field rule) in the problem's text, with what to change.
        assert any(p.startswith(field) or field in p for p in e.problems), (field, e.problems)
        return
    rayservice = ray_service_manifest(spec, hf_token=True, lease_expiry_epoch_s=1, run_id="r")
    assert _round_trips(rayservice)
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == json.loads(json.dumps(serve_config(spec)))
    assert _round_trips(hf_token_secret_manifest(spec, "token", lease_expiry_epoch_s=1, run_id="r"))
    create_cluster_request(spec)
    create_node_pool_request(spec, zone=spec.gpu_pool.node_locations[0], capacity_mode=CapacityMode.ON_DEMAND)


@FAST
@given(value=HOSTILE)
def test_a_hostile_stack_yaml_document_is_rejected_as_a_spec_error(value):
    CASES["stack YAML text"] += 1
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        StackSpec.from_yaml_text(text)
    except SpecError:
        return
    pytest.fail(f"a YAML document {text[:80]!r} became a valid stack")


def test_yaml_tags_that_would_run_code_are_refused():
    CASES["stack YAML text"] += 1
    with pytest.raises(SpecError, match="not valid YAML"):
        StackSpec.from_yaml_text("name: !!python/object/apply:os.system ['touch /tmp/pwned']\n")


@FAST
@given(field=st.sampled_from(["block_name", "file"]), value=HOSTILE)
def test_a_hostile_stack_reference_is_rejected_naming_its_field(field, value):
    CASES["StackRef"] += 1
    try:
        ref = StackRef.model_validate({field: value})
    except ValidationError as e:
        assert {err["loc"][0] for err in e.errors() if err["loc"]} <= {field} and field in str(e)
        return
    if field == "block_name":
        assert ref.block_name.replace("-", "").isalnum() and ref.block_name == ref.block_name.lower()
    else:
        assert ref.file.endswith((".yaml", ".yml")) and not {"\x00", "\n", "\r"} & set(ref.file)


FLOW_PARAMETERS = [
    (serve_llm, "stack", lambda v: {"block_name": v}), (serve_llm, "keep_on_failure", lambda v: v),
    (serve_llm, "lease_s", lambda v: v),
    (teardown_llm, "reason", lambda v: v), (teardown_llm, "delete_cluster_too", lambda v: v),
    (teardown_llm, "stack", lambda v: {"file": v}),
    (redeploy_llm, "model_source", lambda v: v), (redeploy_llm, "reason", lambda v: v),
]


@FAST
@given(case=st.sampled_from(FLOW_PARAMETERS), value=HOSTILE)
def test_a_hostile_flow_parameter_is_rejected_naming_it_before_the_run_starts(case, value):
    CASES["flow parameters"] += 1
    flow, name, wrap = case
    params = {"stack": {"block_name": "my-stack"}, name: wrap(value)}
    try:
        validated = flow.validate_parameters(params)
    except ParameterTypeError as e:
        assert name in str(e)
        return
    if name == "model_source" and validated[name] is not None:
        assert set(validated[name]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:-")
    if name == "reason":
        assert isinstance(validated[name], str) and len(validated[name]) <= 500
    if name in ("keep_on_failure", "delete_cluster_too"):     # no 0/1/"yes" taken for a boolean
        assert validated[name] is value and (value is None or isinstance(value, bool))
    if name == "lease_s":
        assert validated[name] is None or (type(validated[name]) is int and 0 < validated[name] <= 30 * 24 * 3600)


def _render_trigger(payload: dict) -> dict:
    """Render the model-published trigger's parameters for `payload` as the Prefect server does."""
    params = copy.deepcopy(model_published_trigger("deepseek-r1")["parameters"])
    RunDeployment._upgrade_v1_templates(params)
    event = ReceivedEvent(occurred=datetime.now(timezone.utc), event=MODEL_PUBLISHED, id=uuid4(),
                          resource={"prefect.resource.id": stack_resource_id("deepseek-r1")}, payload=payload)
    return hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))


REDEPLOY_SCHEMA = redeploy_llm.parameters.model_dump()
DEPLOYMENT_DEFAULTS = {"stack": {"block_name": "my-stack"}, "reason": "requested"}


@FAST
@given(value=HOSTILE)
def test_a_hostile_model_published_payload_starts_no_run_or_a_run_with_a_valid_model_source(value):
    CASES["event payloads"] += 1
    try:
        rendered = _render_trigger({"model_source": value})
    except HydrationError:
        return                                    # Prefect drops the action: no run is created
    parameters = {**DEPLOYMENT_DEFAULTS, **rendered}
    try:
        validate(parameters, REDEPLOY_SCHEMA, raise_on_error=True, ignore_required=True)
    except SchemaValidationError as e:
        assert "model_source" in str(e) or "reason" in str(e)
        return
    # Created: the value is used literally, never evaluated as a template (null: the stack's own model).
    assert parameters["model_source"] == value and (value is None or isinstance(value, str))
    assert redeploy_llm.validate_parameters(parameters)["model_source"] == value


def test_a_payload_without_model_source_starts_no_run():
    CASES["event payloads"] += 1
    with pytest.raises(HydrationError):
        _render_trigger({"model": "x"})


def test_a_template_in_the_payload_is_data_not_code():
    CASES["event payloads"] += 1
    rendered = _render_trigger({"model_source": "{{ 7*7 }}"})
    # The reason quotes the payload literally; the event id after it is a random UUID (may hold "49").
    assert rendered["model_source"] == "{{ 7*7 }}"
    assert "model {{ 7*7 }}" in rendered["reason"] and "model 49" not in rendered["reason"]
    with pytest.raises(SchemaValidationError, match="model_source"):
        validate({**DEPLOYMENT_DEFAULTS, **rendered}, REDEPLOY_SCHEMA, raise_on_error=True, ignore_required=True)


def test_the_longest_valid_model_source_still_starts_a_redeploy_with_a_reason_that_fits():
    CASES["event payloads"] += 1
    source = "gs://bucket/" + "m" * (1024 - len("gs://bucket/"))
    parameters = {**DEPLOYMENT_DEFAULTS, **_render_trigger({"model_source": source})}
    validate(parameters, REDEPLOY_SCHEMA, raise_on_error=True, ignore_required=True)
    assert redeploy_llm.validate_parameters(parameters)["model_source"] == source
    assert parameters["reason"].startswith("model gs://bucket/mmm") and len(parameters["reason"]) <= 500


def test_zz_report_the_number_of_cases_tried():
    """Runs last in this module: prints how many hostile inputs were tried, per family."""
    total = sum(CASES.values())
    print(f"hostile input cases tried: {total} ({dict(CASES)})")
    assert total >= 1000 or not CASES

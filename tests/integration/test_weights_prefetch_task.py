"""ensure_weights_prefetch / delete_weights_prefetch against the sandbox's Kubernetes API (real client)."""

from __future__ import annotations

import pytest

from blocks.errors import NotOursError
from blocks.render_prefetch import weights_prefetch_manifest
from tasks.gateways.kube import DAEMON_SET
from tasks.weights_prefetch import delete_weights_prefetch, ensure_weights_prefetch
from tests.integration.kuberay_sandbox import kube_sandbox, stack_spec

NS, NAME = "default", "deepseek-r1-prefetch"


@pytest.fixture(scope="module")
def box():
    yield from kube_sandbox(time_scale=200.0, profile="realistic")


def spec(**serving):
    return stack_spec(serving=serving)


def source_of(live: dict) -> str:
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "PREFETCH_SOURCE")


def test_created_once_then_unchanged_without_a_write(box):
    assert ensure_weights_prefetch.fn(box.kube, spec()) == "created"
    box.spy.calls.clear()
    assert ensure_weights_prefetch.fn(box.kube, spec()) == "unchanged"
    assert [c for c in box.spy.writes() if "daemonsets" in c[1]] == []
    assert source_of(box.kube.get(DAEMON_SET, NAME, NS)) == "deepseek-ai/DeepSeek-R1"


def test_a_new_model_updates_it_and_a_gs_source_removes_it(box):
    assert ensure_weights_prefetch.fn(box.kube, spec(model_source="Qwen/Qwen2.5-7B-Instruct")) == "updated"
    assert source_of(box.kube.get(DAEMON_SET, NAME, NS)) == "Qwen/Qwen2.5-7B-Instruct"
    staged = spec(model_source="gs://my-bucket/models/deepseek-ai/DeepSeek-R1")
    assert ensure_weights_prefetch.fn(box.kube, staged) == "deleted"
    assert box.kube.get(DAEMON_SET, NAME, NS) is None
    assert ensure_weights_prefetch.fn(box.kube, staged) == "absent"


def test_turned_off_it_is_removed_and_delete_is_idempotent(box):
    assert ensure_weights_prefetch.fn(box.kube, spec()) == "created"
    assert ensure_weights_prefetch.fn(box.kube, spec(prefetch_weights=False)) == "deleted"
    assert ensure_weights_prefetch.fn(box.kube, spec()) == "created"
    assert delete_weights_prefetch.fn(box.kube, spec()) is True
    assert delete_weights_prefetch.fn(box.kube, spec()) is False


def test_a_daemonset_of_that_name_we_do_not_own_is_never_touched(box):
    foreign = weights_prefetch_manifest(spec())
    foreign["metadata"]["labels"] = {"team": "other"}
    box.kube.apply(foreign)
    try:
        with pytest.raises(NotOursError, match="not labelled as managed by stack 'deepseek-r1'"):
            ensure_weights_prefetch.fn(box.kube, spec(model_source="Qwen/Qwen2.5-7B-Instruct"))
        with pytest.raises(NotOursError):
            delete_weights_prefetch.fn(box.kube, spec())
        assert box.kube.get(DAEMON_SET, NAME, NS)["metadata"]["labels"] == {"team": "other"}
    finally:
        box.kube.delete(DAEMON_SET, NAME, NS)

"""Structural-schema behaviour the KubeRay CRDs do not exercise: preserve-unknown-fields, int-or-string,
nullable, defaults, CEL transition rules, and the patch helpers on their own."""

from __future__ import annotations

import pytest

from sandbox.kube import cel
from sandbox.kube.patching import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.schema import StructuralSchema

SCHEMA = StructuralSchema({"type": "object", "properties": {
    "spec": {"type": "object", "required": ["port"], "properties": {
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "maybe": {"type": "string", "nullable": True},
        "mode": {"type": "string", "default": "auto", "enum": ["auto", "manual"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 1}}}}})


def admit(spec: dict, old: dict | None = None):
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"}, "spec": spec}
    return obj, SCHEMA.admit(obj, old)


def test_int_or_string_nullable_defaults_and_preserved_fields():
    obj, outcome = admit({"port": "http", "maybe": None, "extra": {"anything": {"goes": 1}}, "labels": {"a": "b"}})
    assert outcome.causes == [] and outcome.unknown == []
    assert obj["spec"] == {"port": "http", "maybe": None, "extra": {"anything": {"goes": 1}},
                           "labels": {"a": "b"}, "mode": "auto"}


def test_unknown_fields_are_pruned_and_reported():
    obj, outcome = admit({"port": 80, "bogus": 1, "labels": {"a": "b"}})
    assert "bogus" not in obj["spec"] and outcome.unknown == ["spec.bogus"]


def test_each_violation_is_a_cause_naming_its_path():
    _, outcome = admit({"name": "toolong", "count": 0, "mode": "other", "labels": {"a": 1}})
    by_field = {c["field"]: c["message"] for c in outcome.causes}
    assert by_field == {
        "spec.port": "Required value",
        "spec.name": "Too long: may not be more than 5 bytes",
        "spec.count": "Invalid value: 0: spec.count in body should be greater than or equal to 1",
        "spec.mode": 'Unsupported value: "other": supported values: "auto", "manual"',
        "spec.labels.a": 'Invalid value: "integer": spec.labels.a in body must be of type string: "integer"'}


def test_cel_subset_used_by_kuberay():
    assert cel.holds("self == oldSelf", "a", "b", has_old=False)          # transition rules skip creates
    assert not cel.holds("self == oldSelf", "a", "b", has_old=True)
    assert cel.holds("self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']", "ray.io/kuberay-operator")
    assert not cel.holds("self in ['a', 'b']", "c")
    rule = "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))"
    assert cel.holds(rule, {"onSuccess": {}}) and not cel.holds(rule, {"onSuccess": {}, "deletionRules": []})
    assert cel.holds("self.size() > 2", "x")                                # unsupported: never rejects


def test_patch_helpers():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    live = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
    patched = strategic_merge_patch(live, {"spec": {"containers": [{"name": "b", "$patch": "delete"},
                                                                   {"name": "c", "image": "3"}]}})
    assert [c["name"] for c in patched["spec"]["containers"]] == ["a", "c"]
    assert json_patch({"l": [1, 2]}, [{"op": "add", "path": "/l/-", "value": 3},
                                      {"op": "move", "from": "/l/0", "path": "/first"}]) == {"l": [2, 3], "first": 1}
    with pytest.raises(PatchError, match="missing"):
        json_patch({}, [{"op": "remove", "path": "/nope"}])

"""CRUD on the built-in kinds with the official client: defaults, selectors, errors shaped like the
real API server's (404/409/422 Status bodies), optimistic concurrency, finalizers, dry-run."""

from __future__ import annotations

import json

import kubernetes
import pytest

from tests.sandbox_kube.conftest import pod_manifest


def status_of(caught: pytest.ExceptionInfo) -> dict:
    return json.loads(caught.value.body)


def test_pod_create_get_list_replace_delete_round_trip(core, namespace):
    created = core.create_namespaced_pod(namespace, pod_manifest("web", {"app": "web"}))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.generation == 1
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.metadata.managed_fields[0].manager == "OpenAPI-Generator"
    read = core.read_namespaced_pod("web", namespace)
    assert read.metadata.uid == created.metadata.uid
    read.metadata.labels["tier"] = "front"
    replaced = core.replace_namespaced_pod("web", namespace, read)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.labels == {"app": "web", "tier": "front"}
    core.delete_namespaced_pod("web", namespace)
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == []


def test_label_selectors_filter_lists(core, namespace):
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        core.create_namespaced_pod(namespace, pod_manifest(name, labels))

    def names(selector: str) -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items)

    assert names("app=x") == ["a", "b"]
    assert names("app!=x") == ["c"]
    assert names("app in (x,y),tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector="app=y").items
                  if p.metadata.namespace == namespace) == ["c"]
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace, field_selector="metadata.name=b").items] == ["b"]


def test_missing_object_gets_404_status_naming_the_resource(api, core, namespace):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.read_namespaced_pod("ghost", namespace)
    assert caught.value.status == 404
    assert status_of(caught) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                 "message": 'pods "ghost" not found', "reason": "NotFound",
                                 "details": {"name": "ghost", "kind": "pods"}, "code": 404}
    apps = kubernetes.client.AppsV1Api(api)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        apps.read_namespaced_deployment("ghost", namespace)
    assert status_of(caught)["message"] == 'deployments.apps "ghost" not found'
    assert status_of(caught)["details"] == {"name": "ghost", "group": "apps", "kind": "deployments"}


def test_creating_twice_gets_409_already_exists(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"a": "2"}})
    assert caught.value.status == 409
    assert status_of(caught)["reason"] == "AlreadyExists"
    assert status_of(caught)["message"] == 'configmaps "cfg" already exists'


def test_stale_resource_version_gets_409_conflict(core, namespace):
    first = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"v": "2"}})
    first.data = {"v": "3"}
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.replace_namespaced_config_map("cm", namespace, first)
    assert caught.value.status == 409
    assert status_of(caught)["reason"] == "Conflict"
    assert status_of(caught)["message"] == ('Operation cannot be fulfilled on configmaps "cm": the object has been '
                                            "modified; please apply your changes to the latest version and try again")


def test_invalid_name_gets_422_with_the_dns_1123_message(core, namespace):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.create_namespaced_secret(namespace, {"metadata": {"name": "Bad_Name"}, "stringData": {"k": "v"}})
    assert caught.value.status == 422
    body = status_of(caught)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["message"].startswith('Secret "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 subdomain must consist of")


def test_pod_without_containers_gets_422_required_value(core, namespace):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.create_namespaced_pod(namespace, {"metadata": {"name": "empty"}, "spec": {"containers": []}})
    assert status_of(caught)["message"] == 'Pod "empty" is invalid: spec.containers: Required value'


def test_creating_in_a_missing_namespace_gets_404_for_the_namespace(core):
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "cm"}})
    assert caught.value.status == 404
    assert status_of(caught)["message"] == 'namespaces "nowhere" not found'


def test_secret_string_data_is_stored_base64_encoded(core, namespace):
    secret = core.create_namespaced_secret(namespace, {"metadata": {"name": "hf-token"},
                                                       "stringData": {"hf_api_token": "hf_abc"}})
    assert secret.type == "Opaque" and secret.data == {"hf_api_token": "aGZfYWJj"}
    assert secret.string_data is None


def test_service_gets_a_cluster_ip_and_target_port_defaults(core, namespace):
    svc = core.create_namespaced_service(namespace, {"metadata": {"name": "serve"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"name": "serve", "port": 8000}]}})
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("34.118.")
    assert svc.spec.ports[0].target_port == 8000 and svc.spec.ports[0].protocol == "TCP"


def test_finalizers_hold_deletion_until_removed(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    answer = core.delete_namespaced_config_map("held", namespace)
    live = core.read_namespaced_config_map("held", namespace)
    assert live.metadata.deletion_timestamp is not None
    assert answer is not None
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.read_namespaced_config_map("held", namespace)
    assert caught.value.status == 404


def test_dry_run_validates_without_storing(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dry"}}, dry_run="All")
    assert core.list_namespaced_config_map(namespace).items == []


def test_delete_precondition_on_uid_gets_409(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "pre"}})
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.delete_namespaced_config_map("pre", namespace, body={"preconditions": {"uid": "not-the-uid"}})
    assert caught.value.status == 409
    assert "Precondition failed: UID in precondition: not-the-uid" in status_of(caught)["message"]


def test_every_served_builtin_kind_supports_create_get_list_delete(api, namespace):
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    rbac, coord = kubernetes.client.RbacAuthorizationV1Api(api), kubernetes.client.CoordinationV1Api(api)
    events = kubernetes.client.EventsV1Api(api)
    deployment = {"metadata": {"name": "op", "labels": {"app": "op"}}, "spec": {
        "selector": {"matchLabels": {"app": "op"}}, "template": {"metadata": {"labels": {"app": "op"}}, "spec": {
            "containers": [{"name": "op", "image": "quay.io/kuberay/operator:v1.7.0"}]}}}}
    made = [
        (core.create_namespaced_service_account, core.read_namespaced_service_account, {"metadata": {"name": "sa"}}),
        (apps.create_namespaced_deployment, apps.read_namespaced_deployment, deployment),
        (rbac.create_namespaced_role, rbac.read_namespaced_role, {"metadata": {"name": "r"}, "rules": []}),
        (rbac.create_namespaced_role_binding, rbac.read_namespaced_role_binding, {"metadata": {"name": "rb"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": []}),
        (coord.create_namespaced_lease, coord.read_namespaced_lease, {"metadata": {"name": "ray-operator-leader"},
                                                                       "spec": {"holderIdentity": "me"}}),
        (events.create_namespaced_event, events.read_namespaced_event, {"metadata": {"name": "ev1"},
         "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Created", "note": "hi", "type": "Normal",
         "action": "Create", "reportingController": "x", "reportingInstance": "x"}),
        (core.create_namespaced_event, core.read_namespaced_event, {"metadata": {"name": "ev2"}, "reason": "X",
         "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace}, "message": "m", "type": "Normal"}),
    ]
    for create, read, body in made:
        name = create(namespace, body).metadata.name
        assert read(name, namespace).metadata.name == name
    assert apps.read_namespaced_deployment("op", namespace).spec.replicas == 1
    cluster_role = rbac.create_cluster_role({"metadata": {"name": f"cr-{namespace}"}, "rules": []})
    rbac.delete_cluster_role(cluster_role.metadata.name)
    apps.delete_namespaced_deployment("op", namespace)
    assert apps.list_namespaced_deployment(namespace).items == []


def test_deployment_selector_must_match_template_labels(api, namespace):
    apps = kubernetes.client.AppsV1Api(api)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        apps.create_namespaced_deployment(namespace, {"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {
                "containers": [{"name": "c", "image": "x:1"}]}}}})
    assert status_of(caught)["details"]["causes"][0]["field"] == "spec.template.metadata.labels"


def test_nodes_are_cluster_scoped(core):
    core.create_node({"metadata": {"name": "gke-node-1", "labels": {"cloud.google.com/gke-nodepool": "p"}}})
    assert [n.metadata.name for n in core.list_node(label_selector="cloud.google.com/gke-nodepool=p").items] \
        == ["gke-node-1"]
    core.delete_node("gke-node-1")


def test_namespace_deletion_removes_its_contents(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    core.create_namespaced_pod(namespace, pod_manifest("p"))
    core.delete_namespace(namespace)
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.read_namespace(namespace)
    assert caught.value.status == 404
    assert core.list_namespaced_config_map(namespace).items == []


def test_new_namespaces_get_a_default_service_account(core, namespace, kube):
    import time

    deadline = time.monotonic() + 2
    while not core.list_namespaced_service_account(namespace).items and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [sa.metadata.name for sa in core.list_namespaced_service_account(namespace).items] == ["default"]


def test_events_k8s_io_is_a_view_of_core_events(api, core, namespace):
    core.create_namespaced_event(namespace, {"metadata": {"name": "pod-x.1"}, "reason": "FailedScheduling",
                                             "message": "0/3 nodes are available", "type": "Warning",
                                             "involvedObject": {"kind": "Pod", "name": "pod-x", "namespace": namespace},
                                             "source": {"component": "default-scheduler"},
                                             # without eventTime the official client cannot decode the
                                             # events.k8s.io view (python client issue #1616), as on GKE
                                             "eventTime": "2026-01-01T00:00:00.000000Z"})
    events = kubernetes.client.EventsV1Api(api).list_namespaced_event(
        namespace, field_selector="regarding.name=pod-x").items
    assert [(e.reason, e.note, e.regarding.name, e.reporting_controller) for e in events] == [
        ("FailedScheduling", "0/3 nodes are available", "pod-x", "default-scheduler")]
    kubernetes.client.EventsV1Api(api).create_namespaced_event(namespace, {
        "metadata": {"name": "svc.2"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Created",
        "note": "made it", "type": "Normal", "action": "Create", "reportingController": "ray-operator",
        "reportingInstance": "ray-operator-0", "regarding": {"kind": "Service", "name": "svc"}})
    core_view = core.read_namespaced_event("svc.2", namespace)
    assert (core_view.message, core_view.involved_object.name, core_view.reporting_component) == \
        ("made it", "svc", "ray-operator")


def test_delete_collection_by_label_selector(core, namespace):
    for name, labels in (("keep", {"app": "other"}), ("drop-1", {"app": "ray"}), ("drop-2", {"app": "ray"})):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    core.delete_collection_namespaced_config_map(namespace, label_selector="app=ray")
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == ["keep"]


def test_dry_run_patch_returns_the_result_without_storing_it(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    preview = core.patch_namespaced_config_map("c", namespace, {"data": {"k": "2"}}, dry_run="All")
    assert preview.data == {"k": "2"}
    assert core.read_namespaced_config_map("c", namespace).data == {"k": "1"}

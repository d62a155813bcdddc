"""Watch streams with the official client's `watch.Watch().stream(...)`: initial ADDED events, resume from
a resourceVersion, bookmarks, timeouts, 410 Gone, selector transitions, and injected disconnects."""

from __future__ import annotations

import threading
import time

import kubernetes
import pytest


def cm(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}}


def collect(core, namespace: str, *, stop_after: int | None = None, **kwargs) -> list[tuple[str, str, str]]:
    events = []
    watcher = kubernetes.watch.Watch()
    for event in watcher.stream(core.list_namespaced_config_map, namespace, **kwargs):
        obj = event["raw_object"]
        events.append((event["type"], obj.get("metadata", {}).get("name", ""),
                       obj.get("metadata", {}).get("resourceVersion", "")))
        if stop_after is not None and len(events) >= stop_after:
            watcher.stop()
    return events


def later(delay_s: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        action()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_without_version_lists_then_follows_until_timeout(core, namespace):
    core.create_namespaced_config_map(namespace, cm("first"))
    later(0.3, lambda: (core.create_namespaced_config_map(namespace, cm("second")),
                        core.patch_namespaced_config_map("second", namespace, {"data": {"k": "w"}}),
                        core.delete_namespaced_config_map("first", namespace)))
    started = time.monotonic()
    events = collect(core, namespace, timeout_seconds=1)
    assert time.monotonic() - started < 3
    assert [(kind, name) for kind, name, _ in events] == [
        ("ADDED", "first"), ("ADDED", "second"), ("MODIFIED", "second"), ("DELETED", "first")]


def test_watch_resumes_after_a_resource_version_without_gaps(core, namespace):
    created = core.create_namespaced_config_map(namespace, cm("a"))
    core.patch_namespaced_config_map("a", namespace, {"data": {"k": "1"}})
    core.create_namespaced_config_map(namespace, cm("b"))
    events = collect(core, namespace, resource_version=created.metadata.resource_version, timeout_seconds=1)
    assert [(kind, name) for kind, name, _ in events] == [("MODIFIED", "a"), ("ADDED", "b")]


def test_watch_sends_bookmarks_when_allowed(core, namespace):
    listed = core.list_namespaced_config_map(namespace)
    events = collect(core, namespace, resource_version=listed.metadata.resource_version,
                     allow_watch_bookmarks=True, timeout_seconds=2)
    bookmarks = [e for e in events if e[0] == "BOOKMARK"]
    assert bookmarks and all(int(rv) >= int(listed.metadata.resource_version) for _, _, rv in bookmarks)


def test_too_old_resource_version_gets_410_gone(core, namespace, kube):
    store = kube.ctx.store
    oldest = store._history[0].resource_version  # noqa: SLF001 - the test needs a version outside history
    for _ in range(3):
        store._history.popleft()  # noqa: SLF001
    with pytest.raises(kubernetes.client.ApiException) as caught:
        collect(core, namespace, resource_version=str(oldest + 1), timeout_seconds=1)
    assert caught.value.status == 410
    assert "Expired: too old resource version" in caught.value.reason


def test_label_selector_watch_reports_objects_leaving_and_entering(core, namespace):
    listed = core.list_namespaced_config_map(namespace)
    core.create_namespaced_config_map(namespace, cm("x", {"role": "serve"}))
    core.patch_namespaced_config_map("x", namespace, {"metadata": {"labels": {"role": "other"}}})
    core.patch_namespaced_config_map("x", namespace, {"metadata": {"labels": {"role": "serve"}}})
    events = collect(core, namespace, resource_version=listed.metadata.resource_version,
                     label_selector="role=serve", timeout_seconds=1)
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "x")]


def test_watch_of_custom_objects_streams_dicts(custom, installed_crds, namespace, sample_rayservice):
    later(0.3, lambda: custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices",
                                                              sample_rayservice))
    watcher = kubernetes.watch.Watch()
    seen = []
    for event in watcher.stream(custom.list_namespaced_custom_object, "ray.io", "v1", namespace, "rayservices",
                                timeout_seconds=2):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        watcher.stop()
    assert seen == [("ADDED", "deepseek-r1")]


def test_injected_watch_disconnect_ends_the_stream_early(core, namespace, kube):
    kube.ctx.faults.add({"kind": "watch_disconnect", "times": 1, "after_s": 0.1})
    started = time.monotonic()
    collect(core, namespace, timeout_seconds=5)
    assert time.monotonic() - started < 2


def test_watch_of_one_object_by_name(core, namespace):
    core.create_namespaced_config_map(namespace, cm("one"))
    core.create_namespaced_config_map(namespace, cm("two"))
    events = collect(core, namespace, field_selector="metadata.name=two", timeout_seconds=1)
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "two")]

"""The REST verbs on one resource type: get, list, create, update (PUT), patch, delete, deletecollection.

Each takes a decoded ApiRequest and returns an ApiReply, or raises ApiError with the Status the real
server sends. Read-check-write sequences hold the store lock so concurrent writers see 409s, not
lost updates. Watches are streamed by `watch.py`.
"""

from __future__ import annotations

import copy
import pickle
import uuid
from typing import Any

from sandbox.kube import status as st
from sandbox.kube.admission import Admission
from sandbox.kube.apply import ApplyConflict, WriteContext, server_side_apply, track_update
from sandbox.kube.context import ClusterContext
from sandbox.kube.deletion import Deleter
from sandbox.kube.event_versions import to_core, to_events_v1
from sandbox.kube.fields import render_path
from sandbox.kube.patching import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.request import ApiReply, ApiRequest
from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import field_matcher, label_matcher
from sandbox.kube.store import AlreadyExists, Conflict, NotFound
from sandbox.kube.tables import to_table, wants_table

NAMESPACES = ("", "namespaces")
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json",
               "application/json-patch+json", APPLY)


# Built-in kinds whose registry strategy maintains metadata.generation (others never show it).
_GENERATION_KINDS = {"Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CustomResourceDefinition"}


def shaped(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as served at `rtype`'s version: apiVersion and kind first."""
    if rtype.group == "events.k8s.io":
        obj = to_events_v1(obj)
    if rtype.crd_name is None and rtype.kind not in _GENERATION_KINDS and "generation" in obj.get("metadata", {}):
        obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "generation"}}
    return {"apiVersion": rtype.api_version, "kind": rtype.kind,
            **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}}


def stored(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` in the form the store keeps (core Events for events.k8s.io)."""
    if rtype.group == "events.k8s.io":
        return {"apiVersion": "v1", "kind": "Event", **to_core(obj)}
    return obj


class Verbs:
    def __init__(self, ctx: ClusterContext, admission: Admission, deleter: Deleter):
        self.ctx, self.store, self.admission, self.deleter = ctx, ctx.store, admission, deleter

    # -- reads ----------------------------------------------------------------------------------
    def get(self, req: ApiRequest) -> ApiReply:
        obj = self.store.get(req.rtype.key, req.namespace, req.name or "")
        if obj is None:
            raise st.not_found(req.rtype, req.name or "")
        return ApiReply(200, shaped(req.rtype, obj))

    def list(self, req: ApiRequest) -> ApiReply:
        try:
            labels = label_matcher(req.query.get("labelSelector"))
            fields = field_matcher(req.query.get("fieldSelector"))
        except ValueError as e:
            raise st.bad_request(f"unable to parse requirement: {e}") from None
        items, rv = self.store.list(req.rtype.key, req.namespace)
        items = [o for o in (shaped(req.rtype, i) for i in items) if labels(o) and fields(o)]
        if wants_table(req.headers.get("accept", "")):
            return ApiReply(200, to_table(req.rtype, items, str(rv), now=self.ctx.clock.now(),
                                          include=req.query.get("includeObject", "Metadata")))
        return ApiReply(200, {"apiVersion": req.rtype.api_version, "kind": f"{req.rtype.kind}List",
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    # -- writes ---------------------------------------------------------------------------------
    def _body_object(self, req: ApiRequest) -> dict[str, Any]:
        body = req.decode_body()
        if not isinstance(body, dict):
            raise st.bad_request("the object provided is unrecognized (must be of type Object)")
        kind, version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != req.rtype.kind) or (version and version != req.rtype.api_version):
            raise st.bad_request(f"the API version in the data ({version}) does not match the expected API "
                                 f"version ({req.rtype.api_version})" if version != req.rtype.api_version else
                                 f"the kind in the data ({kind}) does not match the expected kind ({req.rtype.kind})")
        meta = body.setdefault("metadata", {})
        if req.namespace and meta.get("namespace") not in (None, "", req.namespace):
            raise st.bad_request("the namespace of the provided object does not match the namespace sent on the "
                                 "request")
        if req.rtype.namespaced:
            meta["namespace"] = req.namespace
        else:
            meta.pop("namespace", None)
        if req.name and meta.get("name") and meta["name"] != req.name:
            raise st.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                 f"({req.name})")
        return body

    def _context(self, req: ApiRequest, subresource: str = "") -> WriteContext:
        return WriteContext(manager=req.field_manager, api_version=req.rtype.api_version,
                            now=self.ctx.clock.rfc3339(), node=self.admission.node(req.rtype),
                            subresource=subresource)

    def _check_namespace(self, req: ApiRequest) -> None:
        if not req.rtype.namespaced:
            return
        namespace = self.store.get(NAMESPACES, None, req.namespace or "")
        if namespace is None:
            raise st.namespace_not_found(req.namespace or "")
        if namespace["metadata"].get("deletionTimestamp"):
            raise st.ApiError(403, "Forbidden", f'{req.rtype.group_resource} "{req.name or ""}" is forbidden: '
                              f"unable to create new content in namespace {req.namespace} because it is being "
                              "terminated", {"name": req.name or "", "kind": req.rtype.plural})

    def create(self, req: ApiRequest) -> ApiReply:
        obj = self._body_object(req)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "managedFields"):
            meta.pop(server_field, None)
        with self.store.lock:
            self._check_namespace(req)
            warnings = self.admission.admit(req.rtype, obj, None,
                                            field_validation=req.query.get("fieldValidation", "Warn"))
            track_update(None, obj, self._context(req))
            return ApiReply(201, shaped(req.rtype, self._store_create(req, obj)), warnings=warnings)

    def _store_create(self, req: ApiRequest, obj: dict[str, Any]) -> dict[str, Any]:
        if req.dry_run:
            if self.store.get(req.rtype.key, req.namespace, obj["metadata"]["name"]) is not None:
                raise st.already_exists(req.rtype, obj["metadata"]["name"])
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=self.ctx.clock.rfc3339(), generation=1)
            return obj
        try:
            return self.store.create(req.rtype.key, stored(req.rtype, obj))
        except AlreadyExists:
            raise st.already_exists(req.rtype, obj["metadata"]["name"]) from None

    def _live(self, req: ApiRequest) -> dict[str, Any]:
        live = self.store.get(req.rtype.key, req.namespace, req.name or "")
        if live is None:
            raise st.not_found(req.rtype, req.name or "")
        return shaped(req.rtype, live)

    def update(self, req: ApiRequest) -> ApiReply:
        obj = self._body_object(req)
        obj["metadata"]["name"] = req.name
        with self.store.lock:
            live = self._live(req)
            sent_rv = obj["metadata"].get("resourceVersion")
            if not sent_rv and req.rtype.crd_name is not None:
                raise st.invalid(req.rtype, req.name or "", [st.field_cause(
                    "FieldValueInvalid", "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update")])
            if sent_rv and str(sent_rv) != live["metadata"]["resourceVersion"]:
                raise st.conflict(req.rtype, req.name or "", st.STALE_OBJECT)
            new = self._scope_to_subresource(req, live, obj)
            return self._write(req, live, new, apply=False)

    def _scope_to_subresource(self, req: ApiRequest, live: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Keep a write to what its endpoint may change: only status via /status, never status otherwise."""
        if req.subresource == "status":
            scoped = copy.deepcopy(live)
            scoped["status"] = copy.deepcopy(new.get("status"))
            if scoped["status"] is None:
                scoped.pop("status")
            scoped["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion") or \
                live["metadata"]["resourceVersion"]
            return scoped
        new["metadata"]["managedFields"] = live["metadata"].get("managedFields")
        if req.rtype.status_subresource:
            if "status" in live:
                new["status"] = copy.deepcopy(live["status"])
            else:
                new.pop("status", None)
        return new

    def _write(self, req: ApiRequest, live: dict[str, Any], new: dict[str, Any], *, apply: bool) -> ApiReply:
        for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if server_field in live["metadata"]:
                new["metadata"][server_field] = live["metadata"][server_field]
        warnings = self.admission.admit(req.rtype, new, live, field_validation=req.query.get("fieldValidation", "Warn"))
        if not apply:
            track_update(live, new, self._context(req, req.subresource or ""))
        if req.dry_run:
            return ApiReply(200, shaped(req.rtype, new), warnings=warnings)
        if _comparable(new) == _comparable(live):
            # A write that changes nothing is not stored: no new resourceVersion, no watch event.
            return ApiReply(200, live, warnings=warnings)
        try:
            written = self.store.replace(req.rtype.key, stored(req.rtype, new))
        except Conflict:
            raise st.conflict(req.rtype, req.name or "", st.STALE_OBJECT) from None
        except NotFound:
            raise st.not_found(req.rtype, req.name or "") from None
        return ApiReply(200, shaped(req.rtype, written), warnings=warnings)

    def patch(self, req: ApiRequest) -> ApiReply:
        if req.content_type not in PATCH_TYPES:
            raise st.unsupported_media_type(req.content_type)
        if req.content_type == "application/strategic-merge-patch+json" and req.rtype.crd_name:
            raise st.unsupported_media_type(req.content_type)
        patch = req.decode_body()
        with self.store.lock:
            live = self.store.get(req.rtype.key, req.namespace, req.name or "")
            live = shaped(req.rtype, live) if live is not None else None
            if req.content_type == APPLY:
                return self._apply(req, live, patch)
            if live is None:
                raise st.not_found(req.rtype, req.name or "")
            try:
                new = {"application/merge-patch+json": merge_patch,
                       "application/strategic-merge-patch+json": strategic_merge_patch,
                       "application/json-patch+json": json_patch}[req.content_type](live, patch)
            except PatchError as e:
                raise st.ApiError(422, "Invalid", str(e)) from None
            if not isinstance(new, dict):
                raise st.bad_request("the patch did not produce an object")
            if new.get("metadata", {}).get("name") != req.name:
                raise st.bad_request("metadata.name may not be changed by a patch")
            return self._write(req, live, self._scope_to_subresource(req, live, new), apply=False)

    def _apply(self, req: ApiRequest, live: dict[str, Any] | None, applied: Any) -> ApiReply:
        if not isinstance(applied, dict):
            raise st.bad_request("the applied configuration must be an object")
        applied = self._check_applied(req, applied)
        self._check_applied_fields(req, applied)
        force = req.query.get("force", "false").lower() == "true"
        ctx = self._context(req, req.subresource or "")
        try:
            # The merge takes ownership of what it is given; `live` must stay intact for the no-op check.
            result = server_side_apply(_clone(live) if live is not None else None, applied, ctx, force=force)
        except ApplyConflict as e:
            raise st.ApiError(409, "Conflict", str(e), {"causes": [
                {"reason": "FieldManagerConflict", "message": f'conflict with "{c.manager}" using {c.api_version}',
                 "field": render_path(c.path)} for c in e.conflicts]}) from None
        if live is None:
            if req.subresource:
                raise st.not_found(req.rtype, req.name or "")
            with self.store.lock:
                self._check_namespace(req)
                warnings = self.admission.admit(req.rtype, result, None,
                                                field_validation=req.query.get("fieldValidation", "Strict"))
                return ApiReply(201, shaped(req.rtype, self._store_create(req, result)), warnings=warnings)
        scoped = self._scope_to_subresource(req, live, result) if req.subresource else result
        if not req.subresource and req.rtype.status_subresource:
            scoped["status"] = copy.deepcopy(live.get("status"))
            if scoped["status"] is None:
                scoped.pop("status")
        scoped["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        if req.subresource:
            scoped["metadata"]["managedFields"] = result["metadata"].get("managedFields")
        return self._write(req, live, scoped, apply=True)

    def _check_applied_fields(self, req: ApiRequest, applied: dict[str, Any]) -> None:
        """An applied configuration naming a field the schema lacks cannot become a typed patch: 400."""
        schema = self.admission.schema(req.rtype)
        if schema is None:
            return
        unknown = schema.admit(copy.deepcopy(applied)).unknown
        if unknown:
            where = f"{req.namespace}/{req.name}" if req.namespace else req.name
            raise st.bad_request(f"failed to create typed patch object ({where}; {req.rtype.api_version}, "
                                 f"Kind={req.rtype.kind}): .{unknown[0]}: field not declared in schema")

    def _check_applied(self, req: ApiRequest, applied: dict[str, Any]) -> dict[str, Any]:
        for field in ("apiVersion", "kind"):
            if not applied.get(field):
                raise st.bad_request(f"{field} must be set in the applied configuration")
        meta = applied.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != req.name:
            raise st.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                 f"({req.name})")
        if meta.get("managedFields"):
            raise st.bad_request("metadata.managedFields must be nil")
        meta["name"] = req.name
        return self._body_object_from(req, applied)

    def _body_object_from(self, req: ApiRequest, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        if req.rtype.namespaced:
            if meta.get("namespace") not in (None, "", req.namespace):
                raise st.bad_request("the namespace of the provided object does not match the namespace sent "
                                     "on the request")
            meta["namespace"] = req.namespace
        if body["kind"] != req.rtype.kind or body["apiVersion"] != req.rtype.api_version:
            raise st.bad_request(f"the API version in the data ({body['apiVersion']}) and kind ({body['kind']}) "
                                 f"do not match the request ({req.rtype.api_version}, {req.rtype.kind})")
        return body

    # -- deletes --------------------------------------------------------------------------------
    def delete(self, req: ApiRequest) -> ApiReply:
        options = req.decode_body() if req.body else {}
        options = options if isinstance(options, dict) else {}
        policy = req.query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        with self.store.lock:
            live = self._live(req)
            _check_preconditions(req, live, options.get("preconditions") or {})
            if req.dry_run or "All" in (options.get("dryRun") or []):
                return ApiReply(200, shaped(req.rtype, live))
            grace = req.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            result = self.deleter.delete(req.rtype, live, policy=policy,
                                         grace_s=None if grace is None else int(grace))
        if result is not None or req.rtype.kind == "Pod":
            return ApiReply(200, shaped(req.rtype, result or live))
        details = {"name": req.name, "kind": req.rtype.plural, "uid": live["metadata"].get("uid")}
        if req.rtype.group:
            details["group"] = req.rtype.group
        return ApiReply(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": details})

    def delete_collection(self, req: ApiRequest) -> ApiReply:
        listed = self.list(ApiRequest(**{**req.__dict__, "headers": {}})).body
        deleted = []
        for item in listed["items"]:
            with self.store.lock:
                live = self.store.get(req.rtype.key, item["metadata"].get("namespace"), item["metadata"]["name"])
                if live is not None and not req.dry_run:
                    self.deleter.delete(req.rtype, live, policy=req.query.get("propagationPolicy", "Background"))
                    deleted.append(shaped(req.rtype, live))
        return ApiReply(200, {**listed, "items": deleted})


def _clone(obj: dict[str, Any]) -> dict[str, Any]:
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without what every write touches (resourceVersion, managedFields times)."""
    meta = obj.get("metadata") or {}
    managed = [{k: v for k, v in e.items() if k != "time"} for e in meta.get("managedFields") or []]
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")},
            "metadata": {k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")},
            "managedFields": managed}


def _check_preconditions(req: ApiRequest, live: dict[str, Any], preconditions: dict[str, Any]) -> None:
    meta = live["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field)
        if wanted and str(wanted) != str(meta.get(field)):
            raise st.conflict(req.rtype, req.name or "", f"Precondition failed: {label} in precondition: {wanted}, "
                              f"{label} in object meta: {meta.get(field)}")

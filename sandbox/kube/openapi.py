"""OpenAPI v3 documents, as much as kubectl reads: `/openapi/v3` (the index of group-versions) and
`/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION` (paths and schemas).

kubectl 1.32 fetches these before `apply`/`create` to learn whether the server supports the
`fieldValidation` query parameter for a kind (then it validates server-side, with `Strict`); it looks
for a PATCH operation tagged with the kind's `x-kubernetes-group-version-kind`. Custom resources get
their CRD's schema, built-in kinds an open object schema. `/openapi/v2` is not served (404), which
kubectl 1.32 tolerates once v3 is present.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.responses import Response

from sandbox.kube import status as st
from sandbox.kube.resources import ResourceType, ResourceTypes

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _group_versions(types: ResourceTypes) -> dict[str, list[ResourceType]]:
    by_gv: dict[str, list[ResourceType]] = {}
    for rtype in types.all():
        prefix = f"apis/{rtype.group}/{rtype.version}" if rtype.group else f"api/{rtype.version}"
        by_gv.setdefault(prefix, []).append(rtype)
    return by_gv


def _hash(rtypes: list[ResourceType], types: ResourceTypes) -> str:
    parts = []
    for rtype in rtypes:
        crd = types.crd(rtype.crd_name) if rtype.crd_name else None
        parts.append(f"{rtype.kind}:{(crd or {}).get('metadata', {}).get('resourceVersion', '')}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32].upper()


def _schema_name(rtype: ResourceType) -> str:
    group = ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    return f"{group}.{rtype.version}.{rtype.kind}"


def _operation(rtype: ResourceType, verb: str) -> dict[str, Any]:
    gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
    ref = {"$ref": f"#/components/schemas/{_schema_name(rtype)}"}
    return {"operationId": f"{verb}{rtype.kind}", "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
            "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                           for p in _QUERY_PARAMS],
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}}


def _paths(rtype: ResourceType) -> dict[str, Any]:
    base = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    scope = f"{base}/namespaces/{{namespace}}" if rtype.namespaced else base
    item = {verb: _operation(rtype, action) for verb, action in
            (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))}
    collection = {verb: _operation(rtype, action) for verb, action in (("get", "list"), ("post", "post"))}
    return {f"{scope}/{rtype.plural}": collection, f"{scope}/{rtype.plural}/{{name}}": item}


def _schema(rtype: ResourceType, types: ResourceTypes) -> dict[str, Any]:
    gvk = [{"group": rtype.group, "version": rtype.version, "kind": rtype.kind}]
    crd = types.crd(rtype.crd_name) if rtype.crd_name else None
    if crd is not None:
        version = next((v for v in crd["spec"]["versions"] if v["name"] == rtype.version), {})
        schema = dict((version.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
        return {**schema, "x-kubernetes-group-version-kind": gvk}
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "x-kubernetes-group-version-kind": gvk}


def document(types: ResourceTypes, path: str, query: str) -> Response:
    """Serve `/openapi/v3` or one group-version document; 404 for anything else (incl. v2)."""
    del query  # the hash only busts client caches; any value gets the current document
    by_gv = _group_versions(types)
    if path.rstrip("/") == "/openapi/v3":
        index = {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_hash(rtypes, types)}"}
                           for gv, rtypes in by_gv.items()}}
        return Response(json.dumps(index), media_type="application/json")
    gv = path[len("/openapi/v3/"):].strip("/") if path.startswith("/openapi/v3/") else None
    if gv is None or gv not in by_gv:
        raise st.page_not_found()
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rtype in by_gv[gv]:
        paths.update(_paths(rtype))
        schemas[_schema_name(rtype)] = _schema(rtype, types)
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths,
           "components": {"schemas": schemas}}
    return Response(json.dumps(doc, separators=(",", ":")), media_type="application/json",
                    headers={"cache-control": "public, immutable"})

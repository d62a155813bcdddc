"""Decode the Kubernetes protobuf request bodies `kubectl create namespace|secret|configmap|serviceaccount`
sends (kubectl's typed clients write `application/vnd.kubernetes.protobuf`, and client-go does not fall
back to JSON on 415). Only these kinds are decoded; any other protobuf body is answered 415.

Wire format: the magic `k8s\\0`, then a `runtime.Unknown` (1 typeMeta{1 apiVersion, 2 kind}, 2 raw),
where `raw` is the object's message with field numbers from k8s.io/api `generated.proto`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

MAGIC = b"k8s\x00"
Fields = dict[int, list[Any]]


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Fields:
    """Split one message into {field number: [varint ints or length-delimited bytes]}."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _str(f: Fields, n: int) -> str | None:
    """An optional string; empty counts as absent, as Go's `omitempty` JSON would have it."""
    return (f[n][-1].decode() or None) if n in f else None


def _strings(f: Fields, n: int) -> list[str]:
    return [v.decode() for v in f.get(n, [])]


def _map(f: Fields, n: int, *, binary: bool = False) -> dict[str, str] | None:
    if n not in f:
        return None
    entries = [fields(e) for e in f[n]]
    return {_str(e, 1) or "": (base64.b64encode(e.get(2, [b""])[-1]).decode() if binary else _str(e, 2) or "")
            for e in entries}


def _metadata(raw: bytes) -> dict[str, Any]:
    f = fields(raw)
    meta: dict[str, Any] = {}
    for number, name in ((1, "name"), (2, "generateName"), (3, "namespace")):
        if (value := _str(f, number)) is not None:
            meta[name] = value
    for number, name in ((11, "labels"), (12, "annotations")):
        if (value := _map(f, number)) is not None:
            meta[name] = value
    if 14 in f:
        meta["finalizers"] = _strings(f, 14)
    return meta


def _bool(f: Fields, n: int) -> bool | None:
    return bool(f[n][-1]) if n in f else None


def _namespace(f: Fields) -> dict[str, Any]:
    spec = fields(f[2][-1]) if 2 in f else {}
    return {"spec": {"finalizers": _strings(spec, 1)}} if 1 in spec else {}


def _secret(f: Fields) -> dict[str, Any]:
    return {"data": _map(f, 2, binary=True), "type": _str(f, 3), "stringData": _map(f, 4), "immutable": _bool(f, 5)}


def _configmap(f: Fields) -> dict[str, Any]:
    return {"data": _map(f, 2), "binaryData": _map(f, 3, binary=True), "immutable": _bool(f, 4)}


def _service_account(f: Fields) -> dict[str, Any]:
    refs = [{"name": _str(fields(r), 1)} for r in f.get(3, [])]
    return {"imagePullSecrets": refs or None, "automountServiceAccountToken": _bool(f, 4)}


_KINDS: dict[str, Callable[[Fields], dict[str, Any]]] = {
    "Namespace": _namespace, "Secret": _secret, "ConfigMap": _configmap, "ServiceAccount": _service_account}


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object; ProtobufError if it is not one we can read."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    unknown = fields(body[len(MAGIC):])
    type_meta = fields(unknown[1][-1]) if 1 in unknown else {}
    api_version, kind = _str(type_meta, 1) or "", _str(type_meta, 2) or ""
    if kind not in _KINDS or 2 not in unknown:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported; send JSON")
    obj_fields = fields(unknown[2][-1])
    obj = {"apiVersion": api_version, "kind": kind,
           "metadata": _metadata(obj_fields[1][-1]) if 1 in obj_fields else {}}
    obj.update({k: v for k, v in _KINDS[kind](obj_fields).items() if v is not None})
    return obj

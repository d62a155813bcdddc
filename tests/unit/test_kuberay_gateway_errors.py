"""How the Kubernetes gateway turns API server Status answers into our error families (pure)."""

from __future__ import annotations

import pytest

from blocks.errors import PermanentError, TransientError
from tasks.gateways.kube import (
    RAY_SERVICE,
    KubeConflict,
    KubeForbidden,
    KubeRejected,
    KubeUnavailable,
    WatchExpired,
    _NotFound,
    _status_error,
    resource_of,
)


def status(code, message="m", causes=None):
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}
    if causes:
        body["details"] = {"causes": causes}
    return body


@pytest.mark.parametrize("code, kind, family", [
    (429, KubeUnavailable, TransientError), (500, KubeUnavailable, TransientError),
    (503, KubeUnavailable, TransientError), (0, KubeUnavailable, TransientError),
    (409, KubeConflict, TransientError), (410, WatchExpired, TransientError),
    (422, KubeRejected, PermanentError), (400, KubeRejected, PermanentError),
    (403, KubeForbidden, PermanentError), (401, KubeForbidden, PermanentError),
])
def test_status_codes_map_to_the_error_families(code, kind, family):
    error = _status_error(status(code), "RayService default/x")
    assert isinstance(error, kind) and isinstance(error, family)
    assert str(error).startswith("RayService default/x")


def test_a_422_names_every_field_the_api_server_named():
    error = _status_error(status(422, 'RayService.ray.io "x" is invalid', [
        {"reason": "FieldValueInvalid", "field": "spec.serveConfigV2", "message": "must be a string"},
        {"reason": "FieldValueRequired", "field": "spec.rayClusterConfig.headGroupSpec", "message": "Required"}]),
        "RayService default/x")
    assert "spec.serveConfigV2: must be a string" in str(error)
    assert "spec.rayClusterConfig.headGroupSpec: Required" in str(error)


def test_not_found_is_internal_and_a_bad_certificate_is_permanent():
    assert isinstance(_status_error(status(404), "x"), _NotFound)
    bad_ca = _status_error(status(0, "SSLError [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "x")
    assert isinstance(bad_ca, PermanentError) and "cluster CA" in str(bad_ca)


def test_paths_and_unknown_kinds():
    assert RAY_SERVICE.path("default", "deepseek-r1") == "/apis/ray.io/v1/namespaces/default/rayservices/deepseek-r1"
    with pytest.raises(PermanentError, match="cannot apply apiVersion/kind v1/ConfigMap"):
        resource_of({"apiVersion": "v1", "kind": "ConfigMap"})

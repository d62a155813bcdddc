"""The GKE gateway's error classification and backoff (pure parts)."""

from __future__ import annotations

import random

import google.auth.exceptions
import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud.container_v1 import types as T

from blocks.errors import (
    AlreadyExists,
    ApiUnavailable,
    CapacityError,
    InvalidRequest,
    OperationFailed,
    PermanentError,
    PermissionDenied,
    QuotaExceeded,
    ResourceBusy,
    ResourceNotFound,
    Stockout,
    TransientError,
)
from tasks.gateways.gke import ClusterRef, backoff_delay_s, classify_error, operation_failure

STOCKOUT_TEXT = ("Google Compute Engine: Not all instances running in IGM after 10m0s. Expected 2, running 0, "
                 "transitioning 2. Current errors: [GCE_STOCKOUT]: Instance 'gke-x' creation failed: The zone "
                 "'projects/p/zones/us-east5-a' does not have enough resources available to fulfill the request.")
QUOTA_TEXT = ('Insufficient regional quota to satisfy request: resource "NVIDIA_H100_GPUS": request requires '
              "'16.0' and is short '8.0'.")


@pytest.mark.parametrize("code, message, expected", [
    (429, 'Too many operations: cluster "c" hits the concurrent operations quota 5, please try again later.',
     ApiUnavailable),
    (500, "Internal error encountered.", ApiUnavailable),
    (502, "Bad gateway.", ApiUnavailable),
    (503, "The service is currently unavailable.", ApiUnavailable),
    (504, "The request timed out. Please try again.", ApiUnavailable),
    (400, "Operation operation-1 is currently creating cluster c. Please wait and try again once it is done.",
     ResourceBusy),
    (400, "Cluster is running incompatible operation operation-2.", ResourceBusy),
    (400, 'Invalid value for field "nodePool.initialNodeCount": 0. Must be greater than zero.', InvalidRequest),
    (403, QUOTA_TEXT, QuotaExceeded),
    (403, "Required 'container.clusters.create' permission for 'projects/p'.", PermissionDenied),
    (401, "Request had invalid authentication credentials.", PermissionDenied),
    (404, "Not found: projects/p/zones/z/clusters/c.", ResourceNotFound),
    (409, "Already exists: projects/p/zones/z/clusters/c.", AlreadyExists),
    (400, STOCKOUT_TEXT, Stockout),
])
def test_http_answers_map_to_our_error_families(code, message, expected):
    error = classify_error(gexc.from_http_status(code, message), "create node pool p/c/gpu")
    assert type(error) is expected
    assert "create node pool p/c/gpu" in str(error) and message[:30] in str(error)


def test_transient_and_permanent_families_are_what_the_retry_policy_keys_on():
    assert isinstance(classify_error(gexc.from_http_status(503, "x"), "w"), TransientError)
    assert isinstance(classify_error(gexc.from_http_status(409, "x"), "w"), TransientError)
    for code in (400, 401, 403, 404):
        assert isinstance(classify_error(gexc.from_http_status(code, "x"), "w"), PermanentError)
    assert isinstance(classify_error(gexc.from_http_status(403, QUOTA_TEXT), "w"), CapacityError)


@pytest.mark.parametrize("error", [requests.exceptions.ReadTimeout("read timed out"),
                                   requests.exceptions.ConnectionError("refused"),
                                   gexc.RetryError("deadline exceeded", cause=None)])
def test_timeouts_and_connection_errors_are_transient(error):
    assert isinstance(classify_error(error, "get cluster"), ApiUnavailable)


def test_a_concurrent_operations_quota_429_is_not_mistaken_for_a_resource_quota():
    error = classify_error(gexc.from_http_status(429, "hits the concurrent operations quota 5"), "w")
    assert isinstance(error, ApiUnavailable) and not isinstance(error, QuotaExceeded)


def _done(**fields) -> T.Operation:
    return T.Operation(name="operation-1", status=T.Operation.Status.DONE, **fields)


def test_a_done_operation_without_error_is_success():
    assert operation_failure(_done(), "create node pool") is None


def test_a_done_operation_with_a_stockout_condition_is_a_stockout():
    op = _done(error={"code": 8, "message": STOCKOUT_TEXT},
               nodepool_conditions=[T.StatusCondition(code=T.StatusCondition.Code.GCE_STOCKOUT,
                                                      message=STOCKOUT_TEXT)])
    failure = operation_failure(op, "create node pool gpu")
    assert isinstance(failure, Stockout)
    assert "operation-1" in str(failure) and "us-east5-a" in str(failure)


def test_a_stockout_is_recognised_from_the_text_alone():
    assert isinstance(operation_failure(_done(status_message=STOCKOUT_TEXT, error={"code": 8}), "w"), Stockout)


def test_a_quota_condition_is_quota_exceeded():
    op = _done(cluster_conditions=[T.StatusCondition(code=T.StatusCondition.Code.GCE_QUOTA_EXCEEDED,
                                                     message="quota CPUS exceeded")])
    assert isinstance(operation_failure(op, "w"), QuotaExceeded)


def test_any_other_error_in_a_done_operation_is_operation_failed_with_the_message():
    failure = operation_failure(_done(error={"code": 13, "message": "Internal error: the control plane did "
                                                                    "not start."}), "create cluster c")
    assert isinstance(failure, OperationFailed) and "control plane did not start" in str(failure)


def test_an_error_code_without_a_message_still_fails():
    assert isinstance(operation_failure(_done(error={"code": 13}), "w"), OperationFailed)


def test_backoff_grows_is_capped_and_jittered_within_half_to_full_ceiling():
    rng = random.Random(1)
    delays = [backoff_delay_s(n, initial_s=2, max_s=30, multiplier=2, rng=rng) for n in range(8)]
    ceilings = [min(30, 2 * 2 ** n) for n in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays[5:]}) > 1          # jittered, not lockstep at the cap


def test_cluster_ref_builds_resource_names_and_accepts_full_operation_names():
    ref = ClusterRef("p", "us-east5-a", "c")
    assert ref.path == "projects/p/locations/us-east5-a/clusters/c"
    assert ref.node_pool_path("gpu") == ref.path + "/nodePools/gpu"
    assert ref.operation_path("projects/p/locations/us-east5-a/operations/operation-9") == \
        "projects/p/locations/us-east5-a/operations/operation-9"


def test_credential_failures_are_permission_errors_and_token_endpoint_outages_transient():
    refused = classify_error(google.auth.exceptions.RefreshError("invalid_grant: account not found"), "get cluster")
    assert isinstance(refused, PermissionDenied) and "GcpCredentials" in str(refused)
    unreachable = classify_error(google.auth.exceptions.TransportError("connection reset"), "get cluster")
    assert isinstance(unreachable, ApiUnavailable)

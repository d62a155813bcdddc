"""The GKE gateway: the only importer of google-cloud-container's client.

`GkeGateway` wraps `ClusterManagerClient` (REST transport) plus one HTTP session for the v1beta1
node-pool create that carries `hostMaintenancePolicy` (no v1 field; the v1beta1 client is gRPC-only).
It translates google.api_core and requests exceptions into `blocks.errors` with `raise ... from e` and
retries transient ones itself (429, 5xx, timeouts, "operation in progress") with backoff and jitter on
an injected clock: GKE's create calls have no default retry, and reads retry only 503/504.

Contract of the calls: `get_*` return None for NotFound; `delete_*` return None when there is nothing
to delete; `create_*` raise `AlreadyExists` on 409 (observe again); everything else raises a
`PermanentError` or, once the retry budget is spent, the last `TransientError`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import google.auth.credentials
import google.auth.exceptions as gauth_exc
import requests
from google.api_core import exceptions as gexc
from google.auth.transport.requests import AuthorizedSession
from google.cloud import container_v1
from google.cloud.container_v1 import types as T
from google.protobuf import json_format

from blocks.errors import (
    AlreadyExists,
    ApiUnavailable,
    GkeLlmFlowsError,
    InvalidRequest,
    OperationFailed,
    PermanentError,
    PermissionDenied,
    QuotaExceeded,
    ResourceBusy,
    ResourceNotFound,
    Stockout,
)
from tasks.clock import Clock, SystemClock

GKE_API_BASE = "https://container.googleapis.com"
_BUSY_PATTERNS = ("please wait and try again", "incompatible operation", "operation in progress",
                  "is currently")
_STOCKOUT_PATTERNS = ("gce_stockout", "zone_resource_pool_exhausted", "does not have enough resources",
                      "stockout")
_QUOTA_PATTERNS = ("quota",)
# StatusCondition.Code: GCE_STOCKOUT=1, GCE_QUOTA_EXCEEDED=3 (deprecated fields GKE still fills in).
_CONDITION_STOCKOUT, _CONDITION_QUOTA = 1, 3

R = TypeVar("R")
_SDK_ERRORS = (gexc.GoogleAPIError, requests.exceptions.RequestException, gauth_exc.GoogleAuthError)


@dataclass(frozen=True)
class ClusterRef:
    """Where a cluster lives: the three parts of its resource name."""

    project: str
    location: str
    name: str

    @property
    def location_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def path(self) -> str:
        return f"{self.location_path}/clusters/{self.name}"

    def node_pool_path(self, pool: str) -> str:
        return f"{self.path}/nodePools/{pool}"

    def operation_path(self, operation_name: str) -> str:
        return f"{self.location_path}/operations/{operation_name.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient API errors, in seconds of the gateway's clock."""

    initial_s: float = 2.0
    max_s: float = 30.0
    multiplier: float = 2.0
    budget_s: float = 600.0


@dataclass(frozen=True)
class CallTimeouts:
    """Per-request HTTP timeouts in real seconds (the socket's, not the clock's); a timeout is retried."""

    read_s: float = 30.0
    write_s: float = 60.0


def backoff_delay_s(attempt: int, *, initial_s: float, max_s: float, multiplier: float,
                    rng: random.Random) -> float:
    """Return the delay before retry number `attempt` (0-based): exponential, capped, half jittered.

    Jitter keeps many flows that failed together from retrying in lockstep.
    """
    ceiling = min(max_s, initial_s * multiplier ** attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _error_text(e: BaseException) -> str:
    return str(getattr(e, "message", None) or e)


def _matches(text: str, patterns: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(p in lowered for p in patterns)


def classify_error(e: BaseException, what: str) -> GkeLlmFlowsError:
    """Translate a google.api_core or requests exception into one of ours (pure)."""
    text = f"{what}: {_error_text(e)}"
    if isinstance(e, (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                      gexc.RetryError)):
        return ApiUnavailable(f"{text} (network error or timeout; will retry)")
    if isinstance(e, gauth_exc.TransportError) or getattr(e, "retryable", False):
        return ApiUnavailable(f"{text} (could not reach the token endpoint; will retry)")
    if isinstance(e, gauth_exc.GoogleAuthError):
        return PermissionDenied(f"{text} (the GCP credentials were refused; check the GcpCredentials block)")
    if not isinstance(e, gexc.GoogleAPICallError):
        return PermanentError(f"{text} (unexpected {type(e).__name__})")
    code = getattr(e, "code", None)
    if code == 429 or isinstance(e, gexc.ServerError):
        return ApiUnavailable(f"{text} (HTTP {code}; will retry)")
    if isinstance(e, gexc.Conflict):
        return AlreadyExists(text)
    if isinstance(e, gexc.NotFound):
        return ResourceNotFound(text)
    if _matches(text, _STOCKOUT_PATTERNS):
        return Stockout(f"{text} (try another zone or capacity mode)")
    if isinstance(e, (gexc.Forbidden, gexc.Unauthorized)):
        if _matches(text, _QUOTA_PATTERNS):
            return QuotaExceeded(f"{text} (raise the quota or use another zone/capacity mode)")
        return PermissionDenied(f"{text} (grant the credentials roles/container.admin on the project)")
    if _matches(text, _BUSY_PATTERNS):
        return ResourceBusy(f"{text} (another operation holds the resource; will retry)")
    return InvalidRequest(f"{text} (HTTP {code}; fix the request or the spec)")


def operation_failure(op: T.Operation, what: str) -> PermanentError | None:
    """Return the error a DONE operation carries, classified, or None when it succeeded (pure).

    DONE is not success: GKE reports stockouts and quota failures only in the finished operation.
    """
    conditions = list(op.cluster_conditions) + list(op.nodepool_conditions)
    messages = [op.error.message, op.status_message, op.detail] + [c.message for c in conditions]
    text = "; ".join(dict.fromkeys(m for m in messages if m))
    codes = {int(c.code) for c in conditions}
    if not (op.error.code or op.error.message or codes & {_CONDITION_STOCKOUT, _CONDITION_QUOTA}):
        return None
    summary = f"{what}: operation {op.name} failed: {text or f'error code {op.error.code}'}"
    if _CONDITION_STOCKOUT in codes or _matches(text, _STOCKOUT_PATTERNS):
        return Stockout(f"{summary} (try another zone or capacity mode)")
    if _CONDITION_QUOTA in codes or _matches(text, _QUOTA_PATTERNS):
        return QuotaExceeded(f"{summary} (raise the quota or use another zone/capacity mode)")
    return OperationFailed(summary)


class GkeGateway:
    """GKE calls with our errors and our retries. One instance per credentials + endpoint."""

    def __init__(self, client: container_v1.ClusterManagerClient, http: requests.Session, *,
                 api_base: str, clock: Clock | None = None, retry: RetryPolicy | None = None,
                 timeouts: CallTimeouts | None = None, log: logging.Logger | None = None,
                 rng: random.Random | None = None):
        self._client, self._http, self._api_base = client, http, api_base.rstrip("/")
        self._clock = clock or SystemClock()
        self._retry, self._timeouts = retry or RetryPolicy(), timeouts or CallTimeouts()
        self._log = log or logging.getLogger(__name__)
        self._rng = rng or random.Random()

    @classmethod
    def connect(cls, credentials: google.auth.credentials.Credentials, *, api_endpoint: str | None = None,
                clock: Clock | None = None, retry: RetryPolicy | None = None,
                timeouts: CallTimeouts | None = None, log: logging.Logger | None = None) -> GkeGateway:
        """Build the REST client and HTTP session for `api_endpoint` (None: real GKE).

        An override needs its scheme (`http://127.0.0.1:PORT`); without one the client assumes https.
        """
        base = (api_endpoint or GKE_API_BASE).rstrip("/")
        if not re.match(r"^https?://", base):
            raise InvalidRequest(f"api_endpoint {api_endpoint!r} needs a scheme; "
                                 "use e.g. 'http://127.0.0.1:8089' or 'https://container.googleapis.com'")
        client = container_v1.ClusterManagerClient(
            transport="rest", credentials=credentials, client_options={"api_endpoint": base})
        return cls(client, AuthorizedSession(credentials), api_base=base, clock=clock, retry=retry,
                   timeouts=timeouts, log=log)

    # -- the retry loop ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], R]) -> R:
        """Run `fn`, translating its errors; retry ApiUnavailable/ResourceBusy within the budget."""
        deadline = self._clock.monotonic() + self._retry.budget_s
        attempt = 0
        while True:
            try:
                return fn()
            except _SDK_ERRORS as e:
                error = classify_error(e, what)
                delay = backoff_delay_s(attempt, initial_s=self._retry.initial_s, max_s=self._retry.max_s,
                                        multiplier=self._retry.multiplier, rng=self._rng)
                if not isinstance(error, (ApiUnavailable, ResourceBusy)) or \
                        self._clock.monotonic() + delay > deadline:
                    raise error from e
            self._log.info("%s; retrying in %.1fs", error, delay)
            self._clock.sleep(delay)
            attempt += 1

    def _absent_is_none(self, what: str, fn: Callable[[], R]) -> R | None:
        try:
            return self._call(what, fn)
        except ResourceNotFound:
            return None

    # -- clusters -----------------------------------------------------------------------------------
    def get_cluster(self, ref: ClusterRef) -> T.Cluster | None:
        """Return the cluster, or None when it does not exist."""
        return self._absent_is_none(f"get cluster {ref.path}", lambda: self._client.get_cluster(
            name=ref.path, retry=None, timeout=self._timeouts.read_s))

    def list_clusters(self, project: str, location: str) -> list[T.Cluster]:
        """Return the clusters in `location` ("-" for every location) of `project`."""
        parent = f"projects/{project}/locations/{location}"
        response = self._call(f"list clusters in {parent}", lambda: self._client.list_clusters(
            parent=parent, retry=None, timeout=self._timeouts.read_s))
        return list(response.clusters)

    def create_cluster(self, ref: ClusterRef, cluster: T.Cluster) -> T.Operation:
        """Start creating `cluster` in `ref`'s location. Raises AlreadyExists on 409."""
        return self._call(f"create cluster {ref.path}", lambda: self._client.create_cluster(
            parent=ref.location_path, cluster=cluster, retry=None, timeout=self._timeouts.write_s))

    def delete_cluster(self, ref: ClusterRef) -> T.Operation | None:
        """Start deleting the cluster; None when it is already gone."""
        return self._absent_is_none(f"delete cluster {ref.path}", lambda: self._client.delete_cluster(
            name=ref.path, retry=None, timeout=self._timeouts.write_s))

    def set_cluster_labels(self, ref: ClusterRef, labels: dict[str, str], *,
                           fingerprint: str) -> T.Operation:
        """Replace the cluster's resource labels (optimistic concurrency through `fingerprint`)."""
        request = T.SetLabelsRequest(name=ref.path, resource_labels=labels, label_fingerprint=fingerprint)
        return self._call(f"set labels on cluster {ref.path}", lambda: self._client.set_labels(
            request=request, retry=None, timeout=self._timeouts.write_s))

    # -- node pools -------------------------------------------------------------------------------
    def list_node_pools(self, ref: ClusterRef) -> list[T.NodePool]:
        """Return the cluster's node pools."""
        response = self._call(f"list node pools of {ref.path}", lambda: self._client.list_node_pools(
            parent=ref.path, retry=None, timeout=self._timeouts.read_s))
        return list(response.node_pools)

    def get_node_pool(self, ref: ClusterRef, pool: str) -> T.NodePool | None:
        """Return the node pool, or None when it (or its cluster) does not exist."""
        path = ref.node_pool_path(pool)
        return self._absent_is_none(f"get node pool {path}", lambda: self._client.get_node_pool(
            name=path, retry=None, timeout=self._timeouts.read_s))

    def create_node_pool(self, ref: ClusterRef, pool: T.NodePool, *,
                         host_maintenance_interval: str | None = None) -> T.Operation:
        """Start creating `pool`. With a host maintenance interval, POST the v1beta1 body instead.

        Raises AlreadyExists on 409.
        """
        what = f"create node pool {ref.node_pool_path(pool.name)}"
        if host_maintenance_interval:
            return self._call(what, lambda: self._post_v1beta1_node_pool(ref, pool,
                                                                         host_maintenance_interval))
        return self._call(what, lambda: self._client.create_node_pool(
            parent=ref.path, node_pool=pool, retry=None, timeout=self._timeouts.write_s))

    def _post_v1beta1_node_pool(self, ref: ClusterRef, pool: T.NodePool, interval: str) -> T.Operation:
        body = json.loads(json_format.MessageToJson(T.NodePool.pb(pool)))
        body.setdefault("config", {})["hostMaintenancePolicy"] = {"maintenanceInterval": interval}
        response = self._http.post(f"{self._api_base}/v1beta1/{ref.path}/nodePools",
                                   json={"nodePool": body}, timeout=self._timeouts.write_s)
        if response.status_code >= 400:
            raise gexc.from_http_response(response)
        return T.Operation.from_json(response.text, ignore_unknown_fields=True)

    def delete_node_pool(self, ref: ClusterRef, pool: str) -> T.Operation | None:
        """Start deleting the node pool; None when it is already gone."""
        path = ref.node_pool_path(pool)
        return self._absent_is_none(f"delete node pool {path}", lambda: self._client.delete_node_pool(
            name=path, retry=None, timeout=self._timeouts.write_s))

    def set_node_pool_labels(self, ref: ClusterRef, pool: str, labels: dict[str, str]) -> T.Operation:
        """Replace the GCE resource labels of the pool's VMs (an update that recreates no node)."""
        request = T.UpdateNodePoolRequest(name=ref.node_pool_path(pool),
                                          resource_labels=T.ResourceLabels(labels=labels))
        return self._call(f"update labels of node pool {ref.node_pool_path(pool)}",
                          lambda: self._client.update_node_pool(request=request, retry=None,
                                                                timeout=self._timeouts.write_s))

    def set_node_pool_size(self, ref: ClusterRef, pool: str, node_count: int) -> T.Operation:
        """Resize the node pool to `node_count` nodes per zone."""
        return self._call(f"resize node pool {ref.node_pool_path(pool)} to {node_count}",
                          lambda: self._client.set_node_pool_size(
                              name=ref.node_pool_path(pool), node_count=node_count, retry=None,
                              timeout=self._timeouts.write_s))

    # -- operations -------------------------------------------------------------------------------
    def get_operation(self, ref: ClusterRef, operation_name: str) -> T.Operation:
        """Return the operation's current state."""
        path = ref.operation_path(operation_name)
        return self._call(f"get operation {path}", lambda: self._client.get_operation(
            name=path, retry=None, timeout=self._timeouts.read_s))

    def list_operations(self, ref: ClusterRef) -> list[T.Operation]:
        """Return the operations GKE lists for `ref`'s location (all clusters there)."""
        response = self._call(f"list operations in {ref.location_path}", lambda: self._client.list_operations(
            parent=ref.location_path, retry=None, timeout=self._timeouts.read_s))
        return list(response.operations)

"""Thin gateway over the official `kubernetes` client: server-side apply, get, list, watch, delete.

Objects travel as plain JSON dicts (what the API server sends), addressed by a `Resource` (group
version, kind, plural, scope). Every call goes through the client's `ApiClient` (its TLS, bearer
token and refresh hook), and every SDK or transport exception is translated here:

- 404 -> `get` returns None, `delete` returns False (NotFound is a fact, not a failure);
- 409 -> `KubeConflict` (transient: re-read and retry);
- 400/422 -> `KubeRejected` (permanent; names the fields the API server named);
- 401/403 -> `KubeForbidden` (permanent; a permission is missing);
- 410 on a watch -> `WatchExpired` (transient: list again, then watch from the new resourceVersion);
- 429, 5xx, connection errors, read timeouts, dropped watches -> `KubeUnavailable` (transient);
- a TLS certificate the cluster CA did not sign -> `PermanentError`.

Before that, one request is retried by urllib3 with `request_retries()` (installed on the pool manager
by `kube_client.kube_api_client`): GET, server-side-apply PATCH and DELETE (a 404 on the repeat reads
as "already gone") on 429/5xx and connection failures, a few times, with capped jittered backoff or the
server's (capped) Retry-After. The waits are bounded wall seconds, so a down API server still fails
fast for the task retries and deadlines above. Watches are never retried there (their callers list and
watch again); service-proxy GETs only on connection failures (a 503 there is the backend's answer).

Nothing above this module imports `kubernetes` (except `kube_client.py`, which builds the ApiClient).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.util.retry import Retry

from blocks.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

FIELD_MANAGER = "gke-llm-flows"
APPLY_PATCH = "application/apply-patch+yaml"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"


# Statuses that mean "not now" (API Priority and Fairness, an overloaded or restarting server, a proxy
# in front of it), and the verbs we send that give the same result when repeated.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD", "PATCH", "DELETE"})


def request_retries(*, retries: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                    retry_after_max_s: int = 2) -> Retry:
    """Return the urllib3 retry policy for one Kubernetes API request.

    Repeats `RETRY_METHODS` on `RETRY_STATUSES` and cut-off responses (at most twice), any verb on
    connection failures (the request never left), up to `retries` times. Waits: Retry-After capped at
    `retry_after_max_s`, else backoff_s x 2^n (capped, jittered; the first repeat is immediate): at most
    ~1.5 s, or ~8 s when the server sends Retry-After. The last response is then returned, not raised,
    so its Status reaches `_translate`. TLS and other errors are not repeated.
    """
    return Retry(total=retries, connect=retries, read=min(2, retries), status=retries, other=0, redirect=0,
                 allowed_methods=RETRY_METHODS, status_forcelist=RETRY_STATUSES, backoff_factor=backoff_s,
                 backoff_max=max_backoff_s, backoff_jitter=backoff_s, respect_retry_after_header=True,
                 retry_after_max=retry_after_max_s, raise_on_status=False)


# The service proxy: repeat a request that never reached the API server, not a backend's answer.
_PROXY_RETRIES = request_retries().new(status_forcelist=frozenset(), respect_retry_after_header=False)


class KubeUnavailable(TransientError):
    """The API server could not answer now (429, 5xx, connection or read failure, dropped watch)."""


class KubeConflict(TransientError):
    """409: the object changed under us or already exists; re-read and try again."""


class WatchExpired(TransientError):
    """410 Gone: the watch's resourceVersion is too old; list again and watch from there."""


class KubeRejected(PermanentError):
    """400/422: the API server refused the object as invalid."""


class KubeForbidden(PermanentError):
    """401/403: our credentials may not do this."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """Return the collection path, or the object path when `name` is given."""
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


RAY_SERVICE = Resource("ray.io/v1", "RayService", "rayservices", True)
RAY_CLUSTER = Resource("ray.io/v1", "RayCluster", "rayclusters", True)
POD = Resource("v1", "Pod", "pods", True)
EVENT = Resource("v1", "Event", "events", True)
NODE = Resource("v1", "Node", "nodes", False)
SECRET = Resource("v1", "Secret", "secrets", True)
SERVICE = Resource("v1", "Service", "services", True)
NAMESPACE = Resource("v1", "Namespace", "namespaces", False)
SERVICE_ACCOUNT = Resource("v1", "ServiceAccount", "serviceaccounts", True)
DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments", True)
DAEMON_SET = Resource("apps/v1", "DaemonSet", "daemonsets", True)
CRD = Resource("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False)
CLUSTER_ROLE = Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False)
CLUSTER_ROLE_BINDING = Resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding",
                                "clusterrolebindings", False)
ROLE = Resource("rbac.authorization.k8s.io/v1", "Role", "roles", True)
ROLE_BINDING = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True)
JOB = Resource("batch/v1", "Job", "jobs", True)

KNOWN_RESOURCES = {(r.api_version, r.kind): r for r in (
    RAY_SERVICE, RAY_CLUSTER, POD, EVENT, NODE, NAMESPACE, SECRET, SERVICE, SERVICE_ACCOUNT, DEPLOYMENT, DAEMON_SET,
    CRD, CLUSTER_ROLE, CLUSTER_ROLE_BINDING, ROLE, ROLE_BINDING, JOB)}


def resource_of(manifest: dict[str, Any]) -> Resource:
    """Return the Resource of a manifest; PermanentError for a kind this gateway does not know."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in KNOWN_RESOURCES:
        known = sorted(f"{v}/{k}" for v, k in KNOWN_RESOURCES)
        raise PermanentError(f"cannot apply apiVersion/kind {key[0]}/{key[1]}: the Kubernetes gateway knows {known}")
    return KNOWN_RESOURCES[key]


@dataclass(frozen=True)
class ObjectList:
    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    type: str                   # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]


@dataclass(frozen=True)
class ProxyTarget:
    """How to reach an in-cluster Service through the API server's service proxy."""

    base_url: str               # ends in ".../proxy"; append "/v1/models" etc.
    ssl_context: ssl.SSLContext | bool
    token: str | None           # bearer token, never logged


def describe(manifest: dict[str, Any]) -> str:
    """Return `Kind namespace/name` for messages."""
    meta = manifest.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest.get('kind', '?')} {where}{meta.get('name', '?')}"


class KubeApi:
    """The Kubernetes API of one cluster, reached through an official `ApiClient`."""

    def __init__(self, api_client: ApiClient, *, field_manager: str = FIELD_MANAGER,
                 request_timeout_s: float = 30.0):
        self._client = api_client
        self.field_manager = field_manager
        self.request_timeout_s = request_timeout_s

    # -- writes ---------------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply `manifest` (field manager, force) and return the live object.

        Idempotent: applying the same manifest again leaves the object (and its resourceVersion)
        unchanged. Raises KubeRejected naming the fields on 400/422, PermanentError when the
        namespace (or the kind) does not exist, transient errors as above.
        """
        resource, meta = resource_of(manifest), manifest.get("metadata") or {}
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        what = describe(manifest)
        try:
            return self._call("PATCH", resource.path(meta.get("namespace"), meta["name"]), what=what,
                              query=query, body=json.dumps(manifest), content_type=APPLY_PATCH)
        except _NotFound as e:
            raise PermanentError(f"{what} cannot be applied: {e} (does namespace {meta.get('namespace')!r} exist, "
                                 f"and is the {resource.kind} CRD installed?)") from e

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete an object (background propagation). Return False when it was already gone."""
        what = f"{resource.kind} {namespace + '/' if namespace else ''}{name}"
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._call("DELETE", resource.path(namespace, name), what=what, body=json.dumps(body),
                       content_type="application/json")
        except _NotFound:
            return False
        return True

    # -- reads ----------------------------------------------------------------------------------
    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """Return the live object, or None when it does not exist."""
        try:
            return self._call("GET", resource.path(namespace, name),
                              what=f"{resource.kind} {namespace + '/' if namespace else ''}{name}")
        except _NotFound:
            return None

    def list(self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> ObjectList:
        """List objects (all namespaces when `namespace` is None for a namespaced kind)."""
        query = _selectors(label_selector, field_selector)
        try:
            body = self._call("GET", resource.path(namespace), what=f"{resource.plural}", query=query)
        except _NotFound:
            return ObjectList([], "")
        return ObjectList(body.get("items") or [], (body.get("metadata") or {}).get("resourceVersion", ""))

    def list_metadata(self, resource: Resource, namespace: str | None = None, *,
                      label_selector: str | None = None) -> list[dict[str, Any]]:
        """List only the objects' metadata (a server-side Table with `includeObject=Metadata`, as
        `kubectl get` asks): one small dict per object, however big the objects (1 MB CRDs)."""
        query = _selectors(label_selector, None) + [("includeObject", "Metadata")]
        try:
            body = self._call("GET", resource.path(namespace), what=f"{resource.plural} (metadata)", query=query,
                              accept=TABLE_ACCEPT)
        except _NotFound:
            return []
        return [(row.get("object") or {}).get("metadata") or {} for row in body.get("rows") or []]

    def watch(self, resource: Resource, namespace: str | None = None, *, resource_version: str,
              timeout_s: float, idle_timeout_s: float | None = None, label_selector: str | None = None,
              field_selector: str | None = None) -> Iterator[WatchEvent]:
        """Yield changes after `resource_version` until the server ends the watch (~`timeout_s`).

        `idle_timeout_s` (wall seconds, may be < 1) also ends it quietly when no event arrives for
        that long: the server's `timeoutSeconds` is whole wall seconds, too coarse against a sandbox
        whose time runs 60-600x faster. Raises WatchExpired when the version is too old (list
        again), KubeUnavailable when the stream breaks. A normal end means "nothing more for now".
        """
        query = _selectors(label_selector, field_selector) + [
            ("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, int(timeout_s))))]
        url_path, what = resource.path(namespace), f"watch {resource.plural}"
        read_timeout_s = idle_timeout_s if idle_timeout_s is not None else timeout_s + 15
        try:
            response = self._open(url_path, query=query, what=what, read_timeout_s=read_timeout_s)
        except _NotFound as e:
            raise PermanentError(f"{what}: {e} (is the {resource.kind} CRD installed?)") from e
        if response is None:          # no answer within the idle timeout: nothing happened
            if idle_timeout_s is None:
                raise KubeUnavailable(f"{what}: the API server did not answer within {read_timeout_s:.0f}s")
            return
        try:
            for line in iter_resp_lines(response):
                event = _parse_event(line, what)
                if event.get("type") == "ERROR":
                    raise _status_error(event.get("object") or {}, what)
                yield WatchEvent(event["type"], event["object"])
        except urllib3.exceptions.ReadTimeoutError:
            if idle_timeout_s is None:
                raise KubeUnavailable(f"{what}: the API server went silent for {read_timeout_s:.0f}s") from None
        except urllib3.exceptions.ProtocolError as e:
            if idle_timeout_s is None or not _is_timeout(e):
                raise KubeUnavailable(f"{what}: the watch stream broke ({type(e).__name__}: {e})") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeUnavailable(f"{what}: the watch stream broke ({type(e).__name__}: {e})") from e
        finally:
            # The caller may stop after one event: close rather than return a half-read stream to the pool.
            response.close()
            response.release_conn()

    def proxy_target(self, namespace: str, service: str, port: str | int) -> ProxyTarget:
        """Return the service-proxy URL and credentials for `service:port` in `namespace`."""
        config = self._client.configuration
        base = f"{config.host}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"
        token = config.get_api_key_with_prefix("BearerToken", alias="authorization")
        token = token[len("Bearer "):] if token and token.startswith("Bearer ") else token
        return ProxyTarget(base, _ssl_context(config), token)

    def proxy_get_json(self, namespace: str, service: str, port: str | int, path: str, *,
                       query: list[tuple[str, str]] | None = None) -> Any:
        """GET `path` from `service:port` through the API server's service proxy; return its JSON.

        Raises the same error families as the other calls (404/503 when nothing answers there);
        repeats only a request that failed to connect (see the module docstring).
        """
        proxy = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}"
        what = f"service {namespace}/{service}:{port}{path}"
        try:
            response = self._get(proxy, query=query or [], what=what, retries=_PROXY_RETRIES, stream=False,
                                 timeout=urllib3.Timeout(total=self.request_timeout_s))
        except _NotFound as e:
            raise PermanentError(f"{what}: not found ({e})") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _transport_error(e, what, "GET", proxy) from e
        try:
            return json.loads(response.data) if response.data else None
        except ValueError as e:
            raise PermanentError(f"{what}: the answer is not JSON ({response.data[:100]!r})") from e

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, what: str, query: list[tuple[str, str]] | None = None,
              body: str | None = None, content_type: str | None = None,
              accept: str = "application/json") -> dict[str, Any]:
        """Send one request through the ApiClient (its pool manager's retry policy applies)."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            request = self._client.param_serialize(method, path, query_params=query or [],
                                                   header_params=headers, body=body,
                                                   auth_settings=["BearerToken"])
            response = self._client.call_api(*request, _request_timeout=self.request_timeout_s)
            response.read()
            return self._client.response_deserialize(response, {"2XX": "object"}).data
        except ApiException as e:
            raise _translate(e, what) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _transport_error(e, what, method, path) from e

    def _open(self, path: str, *, query: list[tuple[str, str]], what: str, read_timeout_s: float):
        """Open a streaming GET without urllib3's automatic retries (a watch that times out must end)."""
        try:
            return self._get(path, query=query, what=what, retries=False, stream=True,
                             timeout=urllib3.Timeout(connect=10, read=read_timeout_s))
        except urllib3.exceptions.ReadTimeoutError:
            return None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeUnavailable(f"{what}: could not open the watch ({type(e).__name__}: {e})") from e

    def _get(self, path: str, *, query: list[tuple[str, str]], what: str, retries: Retry | bool,
             timeout: urllib3.Timeout, stream: bool) -> urllib3.BaseHTTPResponse:
        """GET straight from the pool manager with `retries`; raise our error (or _NotFound) on non-2xx."""
        method, url, headers, _, _ = self._client.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        response = self._client.rest_client.pool_manager.request(
            method, url, headers=headers, preload_content=not stream, retries=retries, timeout=timeout)
        if not 200 <= response.status <= 299:
            body = response.data
            response.release_conn()
            try:
                status = json.loads(body)
            except ValueError:
                status = {"code": response.status, "message": body[:300].decode(errors="replace")}
            raise _status_error(status if isinstance(status, dict) else {}, what, code=response.status)
        return response


def _transport_error(error: Exception, what: str, method: str, path: str) -> Exception:
    """Map a urllib3/socket failure (retries spent, or not retried) to ours: TLS trust is permanent."""
    reason = getattr(error, "reason", None) or error
    if isinstance(reason, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(reason):
        return PermanentError(f"{what}: the API server's TLS certificate is not signed by the configured "
                              f"cluster CA: {reason}")
    return KubeUnavailable(f"{what}: {method} {path} failed ({type(error).__name__}: {error})")


def _is_timeout(error: Exception) -> bool:
    return any(isinstance(a, (TimeoutError, urllib3.exceptions.ReadTimeoutError)) for a in error.args) or \
        "timed out" in str(error)


def _parse_event(line: str, what: str) -> dict[str, Any]:
    try:
        return json.loads(line)
    except ValueError as e:
        raise KubeUnavailable(f"{what}: the watch stream sent a partial event") from e


class _NotFound(Exception):
    """Internal: 404, turned into None/False by the public methods."""


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def _ssl_context(config) -> ssl.SSLContext | bool:
    if not config.verify_ssl:
        return False
    if getattr(config, "ca_cert_data", None):
        data = config.ca_cert_data
        return ssl.create_default_context(cadata=data.decode() if isinstance(data, bytes) else data)
    if config.ssl_ca_cert:
        return ssl.create_default_context(cafile=config.ssl_ca_cert)
    return True


def _status_body(e: ApiException) -> dict[str, Any]:
    try:
        return json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        return {}


def _translate(e: ApiException, what: str) -> Exception:
    """Map an ApiException to our error families (or _NotFound)."""
    status = _status_body(e)
    if not status:
        status = {"code": e.status, "message": e.reason or ""}
    return _status_error(status, what, code=e.status)


def _status_error(status: dict[str, Any], what: str, *, code: int | None = None) -> Exception:
    code = code if code is not None else int(status.get("code") or 0)
    message = status.get("message") or status.get("reason") or "no message"
    if code == 404:
        return _NotFound(message)
    if code == 410:
        return WatchExpired(f"{what}: {message}")
    if code == 409:
        return KubeConflict(f"{what}: conflict: {message}")
    if code in (400, 422):
        causes = (status.get("details") or {}).get("causes") or []
        fields = "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes)
        return KubeRejected(f"{what} was rejected (HTTP {code}): {message}"
                            + (f" [fields: {fields}]" if fields else ""))
    if code in (401, 403):
        return KubeForbidden(f"{what}: not allowed (HTTP {code}): {message}; check the credentials' "
                             "IAM roles (e.g. roles/container.developer) and RBAC")
    if code == 0 and "CERTIFICATE_VERIFY_FAILED" in message:
        return PermanentError(f"{what}: the API server's TLS certificate is not signed by the configured "
                              f"cluster CA: {message}")
    if code == 0:
        return KubeUnavailable(f"{what}: no answer from the API server: {message}")
    if code == 429 or code >= 500:
        return KubeUnavailable(f"{what}: API server busy or failing (HTTP {code}): {message}")
    return PermanentError(f"{what}: unexpected HTTP {code}: {message}")

"""A Kubernetes `ApiClient` for a GKE cluster, built without gcloud or kubeconfig files.

The client trusts only the cluster's own CA (from `masterAuth.clusterCaCertificate`) and sends a
bearer token taken from a token source before every request (`refresh_api_key_hook`). With google-auth
credentials the source refreshes the access token when it is missing or near expiry, so flows that
wait 30+ minutes for a model to load keep a valid token; the sandbox uses a static token. Its pool
manager retries one request on 429/5xx and connection failures (`kube.request_retries`).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable

import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import kubernetes.client
from google.cloud.container_v1 import types as T

from blocks.errors import InvalidRequest, PermissionDenied
from tasks.gateways.kube import request_retries

TokenSource = Callable[[], str]


def static_token_source(token: str) -> TokenSource:
    """Return a source that always gives `token` (the sandbox's cluster token)."""
    if not token:
        raise InvalidRequest("static token is empty; pass the token the cluster accepts")
    return lambda: token


def google_token_source(credentials: google.auth.credentials.Credentials) -> TokenSource:
    """Return a source of OAuth access tokens from `credentials`, refreshed when not valid.

    google-auth reports a token invalid once it is within a few minutes of expiry, so each request
    gets a token with time left. A lock keeps concurrent requests from refreshing at once.
    """
    lock = threading.Lock()

    def token() -> str:
        with lock:
            if not credentials.valid:
                try:
                    credentials.refresh(google.auth.transport.requests.Request())
                except google.auth.exceptions.RefreshError as e:
                    raise PermissionDenied(f"refreshing the GCP access token for the Kubernetes API "
                                           f"failed: {e}; check the GcpCredentials block") from e
            return credentials.token

    return token


def cluster_ca_pem(cluster: T.Cluster) -> str:
    """Return the cluster CA certificate as PEM text. Raises InvalidRequest when it is missing."""
    encoded = cluster.master_auth.cluster_ca_certificate
    try:
        pem = base64.b64decode(encoded, validate=True).decode() if encoded else ""
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InvalidRequest(f"cluster {cluster.name!r}: masterAuth.clusterCaCertificate is not "
                             "base64-encoded PEM") from e
    if "BEGIN CERTIFICATE" not in pem:
        raise InvalidRequest(f"cluster {cluster.name!r} reports no CA certificate; is it RUNNING?")
    return pem


def kube_api_client(cluster: T.Cluster, token: TokenSource) -> kubernetes.client.ApiClient:
    """Return an ApiClient for `cluster`'s public endpoint that sends `token()` as bearer.

    Its requests are retried by `request_retries()` (the pool manager's default policy).

    Raises InvalidRequest when the cluster has no endpoint or CA yet (not RUNNING).
    """
    if not cluster.endpoint:
        raise InvalidRequest(f"cluster {cluster.name!r} has no endpoint yet (status "
                             f"{T.Cluster.Status(cluster.status).name}); wait until it is RUNNING")
    config = kubernetes.client.Configuration()
    config.host = f"https://{cluster.endpoint}"
    config.ca_cert_data = cluster_ca_pem(cluster)
    config.api_key = {"authorization": token()}
    config.api_key_prefix = {"authorization": "Bearer"}
    # Runs before every request: the token source decides whether a refresh is due.
    config.refresh_api_key_hook = lambda c: c.api_key.__setitem__("authorization", token())
    config.retries = request_retries()          # read when the ApiClient builds its pool manager
    return kubernetes.client.ApiClient(config)

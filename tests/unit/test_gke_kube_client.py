"""Building a Kubernetes client from a GKE Cluster, and the self-refreshing token source."""

from __future__ import annotations

import base64
import datetime

import google.auth.credentials
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.cloud.container_v1 import types as T

from blocks.errors import InvalidRequest
from tasks.gateways.kube_client import google_token_source, kube_api_client, static_token_source


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CountingCredentials(google.auth.credentials.Credentials):
    """Credentials whose tokens last `lifetime` and that count refreshes (no network)."""

    def __init__(self, lifetime: datetime.timedelta):
        super().__init__()
        self.lifetime, self.refreshes = lifetime, 0

    def refresh(self, request):
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + self.lifetime


def test_client_points_at_the_endpoint_trusts_the_cluster_ca_and_sends_the_token():
    pem = _ca_pem()
    cluster = T.Cluster(name="c", endpoint="127.0.0.1:6443", status=T.Cluster.Status.RUNNING,
                        master_auth=T.MasterAuth(cluster_ca_certificate=base64.b64encode(pem.encode()).decode()))
    client = kube_api_client(cluster, static_token_source("sandbox-token"))
    config = client.configuration
    assert config.host == "https://127.0.0.1:6443"
    assert config.ca_cert_data == pem
    assert config.get_api_key_with_prefix("authorization") == "Bearer sandbox-token"


def test_a_cluster_without_endpoint_or_ca_is_refused_with_the_reason():
    with pytest.raises(InvalidRequest, match="no endpoint yet .*PROVISIONING"):
        kube_api_client(T.Cluster(name="c", status=T.Cluster.Status.PROVISIONING), static_token_source("t"))
    with pytest.raises(InvalidRequest, match="no CA certificate"):
        kube_api_client(T.Cluster(name="c", endpoint="1.2.3.4"), static_token_source("t"))


def test_google_tokens_refresh_only_when_missing_or_near_expiry():
    long_lived = CountingCredentials(datetime.timedelta(hours=1))
    token = google_token_source(long_lived)
    assert [token(), token(), token()] == ["token-1"] * 3
    assert long_lived.refreshes == 1
    # google-auth treats a token within its refresh window of expiry as invalid: each call refreshes.
    short_lived = CountingCredentials(datetime.timedelta(seconds=30))
    token = google_token_source(short_lived)
    assert token() == "token-1" and token() == "token-2"


def test_the_refresh_hook_puts_a_fresh_token_on_every_request():
    pem = _ca_pem()
    cluster = T.Cluster(name="c", endpoint="10.0.0.1",
                        master_auth=T.MasterAuth(cluster_ca_certificate=base64.b64encode(pem.encode()).decode()))
    credentials = CountingCredentials(datetime.timedelta(seconds=30))
    config = kube_api_client(cluster, google_token_source(credentials)).configuration
    config.refresh_api_key_hook(config)
    assert config.api_key["authorization"] == "token-2"


def test_an_empty_static_token_is_refused():
    with pytest.raises(InvalidRequest, match="empty"):
        static_token_source("")

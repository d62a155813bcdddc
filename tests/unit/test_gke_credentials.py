"""Where GKE credentials come from: a GcpCredentials block, anonymous for the sandbox, or ADC."""

from __future__ import annotations

import google.auth.credentials
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account
from prefect_gcp import GcpCredentials

from blocks.errors import PermissionDenied
from tasks.gke_credentials import CLOUD_PLATFORM_SCOPE, gke_credentials


def _service_account_info() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "proj-1", "private_key": pem,
            "client_email": "flows@proj-1.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"}


def test_the_sandbox_endpoint_without_a_block_is_anonymous():
    credentials = gke_credentials(None, api_endpoint="http://127.0.0.1:8089")
    assert isinstance(credentials, google.auth.credentials.AnonymousCredentials)


def test_a_block_with_a_service_account_gives_scoped_service_account_credentials():
    block = GcpCredentials(service_account_info=_service_account_info())
    credentials = gke_credentials(block, api_endpoint=None)
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == "flows@proj-1.iam.gserviceaccount.com"
    assert CLOUD_PLATFORM_SCOPE in credentials.scopes


def test_real_gke_without_any_credentials_says_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))          # no gcloud ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "True")                      # no metadata server probe
    with pytest.raises(PermissionDenied, match="GcpCredentials block"):
        gke_credentials(None, api_endpoint=None)

"""Credentials for GKE calls: from the stack's prefect-gcp `GcpCredentials` block, or anonymous.

Anonymous credentials are only for an `api_endpoint` override (the sandbox): real GKE needs a block
(or Application Default Credentials, which `GcpCredentials()` itself falls back to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import google.auth
import google.auth.credentials
import google.auth.exceptions

from blocks.errors import PermissionDenied

if TYPE_CHECKING:  # prefect-gcp imports take about a second; only the annotation needs it here
    from prefect_gcp import GcpCredentials

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def gke_credentials(gcp_credentials: GcpCredentials | None, *,
                    api_endpoint: str | None) -> google.auth.credentials.Credentials:
    """Return google-auth credentials for the GKE API at `api_endpoint` (None: real GKE).

    A block wins when given. Without one: anonymous for an endpoint override, else Application
    Default Credentials. The result carries the cloud-platform scope. Raises PermissionDenied when no
    credentials can be found, saying how to provide them.
    """
    if gcp_credentials is None and api_endpoint:
        return google.auth.credentials.AnonymousCredentials()
    try:
        if gcp_credentials is not None:
            credentials = gcp_credentials.get_credentials_from_service_account()
        else:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise PermissionDenied(
            "no GCP credentials for the GKE API: save a GcpCredentials block with service_account_info "
            "(or service_account_file) and pass it, or set GOOGLE_APPLICATION_CREDENTIALS") from e
    return google.auth.credentials.with_scopes_if_required(credentials, [CLOUD_PLATFORM_SCOPE])

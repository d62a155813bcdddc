"""Build the gateways a flow needs from a loaded stack: GKE always, Kubernetes once the cluster runs.

Against real GKE the Kubernetes API gets a refreshing Google OAuth token; with anonymous credentials
(an `api_endpoint` override such as the local sandbox) there is no Google token to send, so the
cluster gets a fixed bearer token, which is all such an endpoint can check.
"""

from __future__ import annotations

import google.auth.credentials

from flows.stack_ref import LoadedStack
from tasks.clock import Clock
from tasks.cluster import cluster_ref
from tasks.gateways.gke import GkeGateway
from tasks.gateways.kube import KubeApi
from tasks.gateways.kube_client import google_token_source, kube_api_client, static_token_source
from tasks.gke_credentials import gke_credentials

ANONYMOUS_CLUSTER_TOKEN = "anonymous"


class Connections:
    """The gateways of one stack, built lazily and shared by the tasks of one flow run."""

    def __init__(self, stack: LoadedStack, clock: Clock):
        self.stack, self.clock = stack, clock
        self.credentials = gke_credentials(stack.gcp_credentials, api_endpoint=stack.spec.cluster.api_endpoint)
        self.gke = GkeGateway.connect(self.credentials, api_endpoint=stack.spec.cluster.api_endpoint, clock=clock)
        self._kube: KubeApi | None = None

    def kube(self) -> KubeApi | None:
        """The cluster's Kubernetes API, or None when the cluster does not exist or has no endpoint yet."""
        if self._kube is None:
            cluster = self.gke.get_cluster(cluster_ref(self.stack.spec))
            if cluster is None or not cluster.endpoint or not cluster.master_auth.cluster_ca_certificate:
                return None
            self._kube = KubeApi(kube_api_client(cluster, self._token_source()))
        return self._kube

    def _token_source(self):
        if isinstance(self.credentials, google.auth.credentials.AnonymousCredentials):
            return static_token_source(ANONYMOUS_CLUSTER_TOKEN)
        return google_token_source(self.credentials)

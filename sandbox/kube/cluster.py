"""One simulated GKE cluster's Kubernetes: its store, HTTPS API server and controllers.

`KubeCluster.start()` seeds what a new GKE cluster already has (the four system namespaces, their
`default` ServiceAccounts, the `kubernetes` Service), serves the API on 127.0.0.1 with a fresh CA, and
starts every controller. `stop()` undoes that. It never imports the project's flows or tasks.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from typing import Any

from sandbox.clock import ScaledClock
from sandbox.faults import Faults
from sandbox.hooks import ClusterRef, KubeEndpoint
from sandbox.kube.apiserver import KubeApiServer
from sandbox.kube.certs import ServingCerts, generate_serving_certs
from sandbox.kube.context import ClusterContext, Controller
from sandbox.kube.store import AlreadyExists, ObjectStore, WatchEvent
from sandbox.serving import ServerHandle, start_server

log = logging.getLogger("sandbox.kube")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACES = ("", "namespaces")
SERVICE_ACCOUNTS = ("", "serviceaccounts")


def default_controllers() -> list[type]:
    """Every simulated controller class (nodes, scheduler, kubelet, Deployments, KubeRay, ...)."""
    from sandbox.kube.controllers import CONTROLLERS  # noqa: PLC0415 - controllers import the context, not us

    return list(CONTROLLERS)


class KubeCluster:
    """The Kubernetes side of one GKE cluster."""

    def __init__(self, cluster: ClusterRef, *, clock: ScaledClock, profile: dict[str, Any], faults: Faults,
                 controllers: Sequence[type] | None = None):
        self.ctx = ClusterContext(cluster=cluster, store=ObjectStore(clock.rfc3339), clock=clock,
                                  profile=profile, faults=faults)
        self.api = KubeApiServer(self.ctx)
        self._controller_classes = list(controllers) if controllers is not None else None
        self._controllers: list[Controller] = []
        self._server: ServerHandle | None = None
        self._certs: ServingCerts | None = None
        self._unsubscribe = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> KubeEndpoint:
        """Seed, serve and start controllers. Returns where the API listens and its CA."""
        self._seed()
        self._unsubscribe = self.ctx.store.subscribe(self._on_event)
        self._certs = generate_serving_certs()
        self.api.start()
        self._server = start_server(self.api.app, certfile=self._certs.cert_file, keyfile=self._certs.key_file,
                                    name=f"kube-apiserver-{self.ctx.cluster.name}")
        self.api.server_address = self.endpoint
        classes = self._controller_classes if self._controller_classes is not None else default_controllers()
        for cls in classes:
            controller = cls()
            controller.start(self.ctx)
            self._controllers.append(controller)
        return KubeEndpoint(endpoint=self.endpoint, ca_certificate_pem=self.ca_pem)

    def stop(self) -> None:
        for controller in reversed(self._controllers):
            controller.stop()
        self._controllers.clear()
        if self._unsubscribe:
            self._unsubscribe()
        self.api.stop()
        if self._server:
            # Idle keep-alive TLS connections (client pools) would hold uvicorn's graceful shutdown
            # for its full timeout; a simulated control plane can just go away.
            self._server.server.force_exit = True
            self._server.stop()
            self._server = None
        if self._certs:
            shutil.rmtree(self._certs.directory, ignore_errors=True)

    # -- where it is ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"cluster {self.ctx.cluster.key}: API server not started")
        return self._server.port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.endpoint}"

    @property
    def ca_pem(self) -> str:
        return self._certs.ca_pem if self._certs else ""

    @property
    def ca_file(self) -> str:
        return self._certs.ca_file if self._certs else ""

    # -- contents -------------------------------------------------------------------------------
    def _seed(self) -> None:
        store = self.ctx.store
        for name in SYSTEM_NAMESPACES:
            store.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                                      "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
            self._default_service_account(name)
        store.create(("", "services"), {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": "34.118.224.1", "clusterIPs": ["34.118.224.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}],
                     "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {}}})

    def _default_service_account(self, namespace: str) -> None:
        try:
            self.ctx.store.create(SERVICE_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                     "metadata": {"name": "default", "namespace": namespace}})
        except AlreadyExists:
            pass

    def _on_event(self, event: WatchEvent) -> None:
        # The ServiceAccount controller's job: every new namespace gets a `default` ServiceAccount.
        if event.resource == NAMESPACES and event.type == "ADDED":
            name = event.object["metadata"]["name"]
            self.ctx.clock.call_later(0, lambda: self._default_service_account(name))

    def inventory(self) -> dict[str, Any]:
        """Objects by resource (`pods`, `rayservices.ray.io`, ...) with namespace, name and a state.

        Events are left out (they are many and say nothing about what exists).
        """
        store = self.ctx.store
        return {f"{plural}.{group}" if group else plural: [_summary(o) for o in store.list((group, plural))[0]]
                for group, plural in store.resources() if (group, plural) != ("", "events")}

    def requests(self) -> list[dict[str, Any]]:
        """API requests received so far (simulated time, method, path, query), oldest first."""
        return list(self.api.requests)


def _summary(obj: dict[str, Any]) -> dict[str, Any]:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    summary: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("namespace"):
        summary["namespace"] = meta["namespace"]
    state = status.get("phase") or status.get("serviceStatus") or status.get("state")
    if state:
        summary["state"] = state
    if meta.get("deletionTimestamp"):
        summary["deleting"] = True
    return summary

"""The RayService's Kubernetes Services, serve endpoints and conditions (split from `kuberay.py`).

`<name>-head-svc` (headless, the head's ports) and `<name>-serve-svc` (ClusterIP, only `serve*`
ports, selector `ray.io/cluster=<cluster>, ray.io/serve=true`) are created when the apps first run
and re-pointed at the new cluster on promotion. `numServeEndpoints` counts the ready pods behind the
serve service; `Ready` follows it (`calculateConditions`). The opt-in `ray.io/initializing-timeout`
annotation (v1.5.0+) is measured from the `Ready` condition's last transition.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone
from typing import Any

from sandbox.kube import rayserve
from sandbox.kube.context import ClusterContext, HttpRequest
from sandbox.kube.controllers import raypods
from sandbox.kube.controllers.base import PODS, SERVICES, owner_reference, set_condition
from sandbox.kube.controllers.deployments import is_ready
from sandbox.kube.controllers.events import record_event
from sandbox.kube.store import AlreadyExists, NotFound

COMPONENT = "rayservice-controller"
SERVE_LABEL = "ray.io/serve"


def serve_service_name(rs: dict[str, Any]) -> str:
    return f"{rs['metadata']['name']}-serve-svc"


def ensure_services(ctx: ClusterContext, rs: dict[str, Any], cluster: dict[str, Any]) -> None:
    """Create or re-point `<name>-head-svc` and `<name>-serve-svc` at `cluster`."""
    name, cluster_name = rs["metadata"]["name"], cluster["metadata"]["name"]
    ports = raypods.head_ports(cluster)
    serve_ports = {k: v for k, v in ports.items() if k == "serve" or k.startswith("serve-")}
    head = _service(rs, f"{name}-head-svc", raypods.service_ports(ports),
                    {"ray.io/cluster": cluster_name, "ray.io/node-type": "head"}, headless=True)
    _ensure(ctx, rs, head)
    if not serve_ports:
        record_event(ctx, rs, "Warning", "FailedToCreateService",
                     f"Failed to create serve service {serve_service_name(rs)}: the head container of RayCluster "
                     f"{cluster_name} lists ports but none named 'serve' or 'serve-*'", component=COMPONENT)
        return
    serve = _service(rs, serve_service_name(rs), raypods.service_ports(serve_ports),
                     {"ray.io/cluster": cluster_name, SERVE_LABEL: "true"}, headless=False)
    _ensure(ctx, rs, serve)


def _service(rs: dict[str, Any], name: str, ports: list[dict[str, Any]], selector: dict[str, str], *,
             headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "ports": ports, "selector": selector}
    if headless:
        spec.update(clusterIP="None", clusterIPs=["None"], publishNotReadyAddresses=True)
    else:
        ip = f"34.118.{random.randint(224, 239)}.{random.randint(2, 254)}"   # GKE's default services range
        spec.update(clusterIP=ip, clusterIPs=[ip], ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack",
                    sessionAffinity="None", internalTrafficPolicy="Cluster")
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": rs["metadata"].get("namespace"),
                         "labels": {"ray.io/originated-from-cr-name": rs["metadata"]["name"],
                                    "ray.io/originated-from-crd": "RayService",
                                    "app.kubernetes.io/name": "kuberay",
                                    "app.kubernetes.io/created-by": "kuberay-operator"},
                         "ownerReferences": [owner_reference(rs)]},
            "spec": spec}


def _ensure(ctx: ClusterContext, rs: dict[str, Any], svc: dict[str, Any]) -> None:
    namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    live = ctx.store.get(SERVICES, namespace, name)
    if live is None:
        try:
            ctx.store.create(SERVICES, svc)
        except AlreadyExists:
            return
        record_event(ctx, rs, "Normal", "CreatedService", f"Created service {namespace}/{name}", component=COMPONENT)
        return
    if live["spec"].get("selector") != svc["spec"]["selector"]:
        ctx.store.mutate(SERVICES, namespace, name,
                         lambda s: s["spec"].__setitem__("selector", svc["spec"]["selector"]))
        record_event(ctx, rs, "Normal", "UpdatedService", f"Updated service {namespace}/{name}", component=COMPONENT)


def count_serve_endpoints(ctx: ClusterContext, rs: dict[str, Any]) -> int:
    """Unique ready pods behind `<name>-serve-svc` (0 when it does not exist yet)."""
    svc = ctx.store.get(SERVICES, rs["metadata"].get("namespace"), serve_service_name(rs))
    if svc is None:
        return 0
    selector = ",".join(f"{k}={v}" for k, v in (svc["spec"].get("selector") or {}).items())
    pods, _ = ctx.store.list(PODS, rs["metadata"].get("namespace"), selector)
    return len([p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")])


def label_head_for_serve(ctx: ClusterContext, head: dict[str, Any]) -> None:
    """Set the head's `ray.io/serve` label from its proxy's `/-/healthz`, as the operator does each pass."""
    namespace, name = head["metadata"].get("namespace"), head["metadata"]["name"]
    proxy = ctx.pod_ports.handler(namespace, name, rayserve.SERVE_PORT)
    healthy = proxy is not None and proxy(HttpRequest("GET", "/-/healthz", "", {}, b"")).status == 200
    wanted = "true" if healthy else "false"
    if (head["metadata"].get("labels") or {}).get(SERVE_LABEL) == wanted:
        return
    try:
        ctx.store.mutate(PODS, namespace, name, lambda p: p["metadata"].setdefault("labels", {}).__setitem__(
            SERVE_LABEL, wanted))
    except NotFound:
        return


def init_conditions(ctx: ClusterContext, status: dict[str, Any], rs: dict[str, Any]) -> None:
    conditions = status.setdefault("conditions", [])
    extra = {"observedGeneration": rs["metadata"].get("generation", 1)}
    now = ctx.clock.rfc3339()
    set_condition(conditions, "Ready", "False", now=now, reason="Initializing", message="", extra=extra)
    set_condition(conditions, "UpgradeInProgress", "False", now=now, reason="Initializing", message="", extra=extra)


def set_ready(ctx: ClusterContext, status: dict[str, Any], rs: dict[str, Any], value: str, reason: str,
              message: str) -> None:
    set_condition(status.setdefault("conditions", []), "Ready", value, now=ctx.clock.rfc3339(), reason=reason,
                  message=message, extra={"observedGeneration": rs["metadata"].get("generation", 1)})
    # Deprecated mirror of Ready; the Go field is omitempty, so it is absent unless "Running".
    if value == "True":
        status["serviceStatus"] = "Running"
    else:
        status.pop("serviceStatus", None)


def set_conditions(ctx: ClusterContext, status: dict[str, Any], rs: dict[str, Any]) -> None:
    """`Ready` from the endpoint count; `UpgradeInProgress` from active/pending (calculateConditions)."""
    endpoints = int(status.get("numServeEndpoints", 0))
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if endpoints > 0:
        set_ready(ctx, status, rs, "True", "NonZeroServeEndpoints", "Number of serve endpoints is greater than 0")
    elif ready.get("status") == "True" or ready.get("reason") == "ZeroServeEndpoints":
        set_ready(ctx, status, rs, "False", "ZeroServeEndpoints", "Number of serve endpoints dropped to 0")
    else:
        set_ready(ctx, status, rs, "False", "Initializing", ready.get("message", ""))
    active = (status.get("activeServiceStatus") or {}).get("rayClusterName")
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName")
    now, extra = ctx.clock.rfc3339(), {"observedGeneration": rs["metadata"].get("generation", 1)}
    conditions = status["conditions"]
    if active and pending:
        set_condition(conditions, "UpgradeInProgress", "True", now=now, reason="BothActivePendingClustersExist",
                      message="Both active and pending Ray clusters exist", extra=extra)
    elif active:
        set_condition(conditions, "UpgradeInProgress", "False", now=now, reason="NoPendingCluster",
                      message="Active Ray cluster exists and no pending Ray cluster", extra=extra)
    else:
        set_condition(conditions, "UpgradeInProgress", "Unknown", now=now, reason="NoActiveCluster",
                      message="No active Ray cluster exists, and the RayService is initializing", extra=extra)


INITIALIZING_TIMEOUT = "ray.io/initializing-timeout"
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def initializing_timeout_s(rs: dict[str, Any]) -> float | None:
    """The `ray.io/initializing-timeout` annotation in seconds (Go duration or integer seconds), if any."""
    raw = ((rs["metadata"].get("annotations") or {}).get(INITIALIZING_TIMEOUT) or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    match = _GO_DURATION.match(raw)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def initializing_timed_out(ctx: ClusterContext, rs: dict[str, Any], status: dict[str, Any]) -> bool:
    """True once `Ready` has been False/Initializing for longer than the annotation allows (v1.5.0+)."""
    timeout = initializing_timeout_s(rs)
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if timeout is None or ready is None or ready.get("reason") != "Initializing":
        return False
    since = datetime.strptime(ready["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return ctx.clock.now() - since.timestamp() > timeout


def ready_reason(status: dict[str, Any]) -> str:
    return next((c.get("reason", "") for c in status.get("conditions") or [] if c.get("type") == "Ready"), "")

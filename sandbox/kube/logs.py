"""The `pods/NAME/log` subresource (`kubectl logs`): lines simulated processes wrote to `ctx.pod_logs`,
with the real server's 400 messages for an ambiguous, unknown or not-yet-started container."""

from __future__ import annotations

from typing import Any

from sandbox.kube import status as st
from sandbox.kube.context import ClusterContext
from sandbox.kube.request import ApiRequest

PODS = ("", "pods")
_WAITING = {"ImagePullBackOff": "trying and failing to pull image", "ErrImagePull": "trying and failing to pull image"}


def _container(pod: dict[str, Any], wanted: str | None) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    name = pod["metadata"]["name"]
    if not wanted:
        if len(names) != 1:
            raise st.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                 f"[{' '.join(names)}]")
        return names[0]
    if wanted not in names:
        raise st.bad_request(f"container {wanted} is not valid for pod {name}")
    return wanted


def _waiting_reason(pod: dict[str, Any], container: str) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            waiting = (status.get("state") or {}).get("waiting")
            return _WAITING.get(waiting.get("reason", ""), waiting.get("reason")) if waiting else None
    return "ContainerCreating"


def read_log(ctx: ClusterContext, req: ApiRequest) -> str:
    """The log text for `req` (pods/NAME/log), honouring container, previous and tailLines."""
    pod = ctx.store.get(PODS, req.namespace, req.name or "")
    if pod is None:
        raise st.not_found(req.rtype, req.name or "")
    container = _container(pod, req.query.get("container"))
    previous = req.query.get("previous") in ("true", "1")
    lines = ctx.pod_logs.read(req.namespace or "", pod["metadata"]["name"], container, previous=previous)
    if lines is None:
        if previous:
            raise st.bad_request(f'previous terminated container "{container}" in pod "{req.name}" not found')
        if (reason := _waiting_reason(pod, container)) is not None:
            raise st.bad_request(f'container "{container}" in pod "{req.name}" is waiting to start: {reason}')
        lines = []
    tail = req.query.get("tailLines")
    if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
        lines = lines[len(lines) - int(tail):] if int(tail) else []
    return "".join(line + "\n" for line in lines)

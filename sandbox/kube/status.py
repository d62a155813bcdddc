"""Errors as the Kubernetes API server reports them: a `Status` object with reason, details and code.

Clients branch on these fields (`kubectl` prints `message`, the Python client raises ApiException with
`status` and the JSON body), so the shapes follow the real server's, field for field.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.resources import ResourceType


class ApiError(Exception):
    """An API failure carrying the Status body the real server would send."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rtype: ResourceType, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details.update(extra)
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rtype.group_resource} "{name}" not found', _details(rtype, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"})


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rtype.group_resource} "{name}" already exists',
                    _details(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": {why}',
                    _details(rtype, name))


STALE_OBJECT = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(rtype: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid; each cause is {reason, message, field} as field.Error renders it."""
    summary = ", ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    details = {"name": name, "group": rtype.group, "kind": rtype.kind, "causes": causes}
    if not rtype.group:
        del details["group"]
    return ApiError(422, "Invalid", f'{rtype.qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource",
                       ) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                    f'accepted media types include: application/json-patch+json, application/merge-patch+json, '
                    f'application/apply-patch+yaml; got "{content_type}"')


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def page_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


# Status reasons the real server uses for transient failures, by code.
TRANSIENT_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                     504: "Timeout"}


def transient(code: int) -> ApiError:
    reason = TRANSIENT_REASONS.get(code, "InternalError")
    message = {429: "Too many requests, please try again later.",
               503: "the server is currently unable to handle the request",
               504: "the server was unable to return a response in the time allotted, but may still be "
                    "processing the request"}.get(code, "an error on the server (\"\") has prevented the "
                                                        "request from succeeding")
    headers = {"Retry-After": "1"} if code in (429, 503) else {}
    return ApiError(code, reason, message, {"retryAfterSeconds": 1} if headers else {}, headers)


def field_cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}

"""GKE's error answers: `{"error": {"code", "message", "status", "errors"}}` with the HTTP code as the class.

The official client picks the exception class from the HTTP code alone (409 -> Conflict, 400 ->
BadRequest), so the code and the message text are what clients key on; the texts follow what real GKE
writes (sources in `reference/gke.md` section 4).
"""

from __future__ import annotations

from typing import Any

_REASONS = {400: "badRequest", 403: "forbidden", 404: "notFound", 409: "alreadyExists",
            429: "rateLimitExceeded", 500: "backendError", 503: "backendError", 504: "backendError"}


class GkeError(Exception):
    """An API error with its HTTP code, canonical status name and message."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body GKE answers with."""
        reason = _REASONS.get(self.code, "error")
        return {"error": {"code": self.code, "message": self.message, "status": self.status,
                          "errors": [{"message": self.message, "domain": "global", "reason": reason}]}}


def not_found(resource: str) -> GkeError:
    """404 NOT_FOUND for `resource` (`projects/P/zones/Z/clusters/C`)."""
    return GkeError(404, "NOT_FOUND", f"Not found: {resource}.")


def already_exists(resource: str) -> GkeError:
    """409 ALREADY_EXISTS for `resource`."""
    return GkeError(409, "ALREADY_EXISTS", f"Already exists: {resource}.")


def invalid(message: str) -> GkeError:
    """400 INVALID_ARGUMENT."""
    return GkeError(400, "INVALID_ARGUMENT", message)


def precondition(message: str) -> GkeError:
    """400 FAILED_PRECONDITION."""
    return GkeError(400, "FAILED_PRECONDITION", message)


def busy(operation: str, doing: str) -> GkeError:
    """Another operation holds the cluster: GKE's 'Please wait and try again' answer."""
    return precondition(f"Operation {operation} is currently {doing}. Please wait and try again once it is done.")


def too_many_operations(cluster: str) -> GkeError:
    """429 RESOURCE_EXHAUSTED: the cluster's concurrent-operation quota."""
    return GkeError(429, "RESOURCE_EXHAUSTED",
                    f'Too many operations: cluster "{cluster}" hits the concurrent operations quota 5, '
                    "please try again later.")


def quota_exceeded(project: str, metric: str, requested: float, limit: float) -> GkeError:
    """403 PERMISSION_DENIED: regional quota `metric` short for this create."""
    short = max(requested - limit, 0.0) or requested
    return GkeError(403, "PERMISSION_DENIED",
                    f'Insufficient regional quota to satisfy request: resource "{metric}": request requires '
                    f"'{requested:.1f}' and is short '{short:.1f}'. project has a quota of '{limit:.1f}' with "
                    f"'{limit:.1f}' available. View and manage quotas at "
                    f"https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}.")


_TRANSIENT = {
    429: ("RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' "
                                "of service 'container.googleapis.com'."),
    500: ("INTERNAL", "Internal error encountered."),
    502: ("UNAVAILABLE", "Bad gateway."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


def transient(code: int) -> GkeError:
    """A retryable server-side answer (429, 500, 502, 503, 504)."""
    if code not in _TRANSIENT:
        raise ValueError(f"transient fault status must be one of {sorted(_TRANSIENT)}; got {code!r}")
    status, message = _TRANSIENT[code]
    return GkeError(code, status, message)


TRANSIENT_CODES = tuple(sorted(_TRANSIENT))

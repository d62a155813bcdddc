"""The two error families every layer speaks.

`PermanentError` (invalid spec, quota, permission, stockout everywhere, immutable drift, a fatal
rollout) fails the run fast and triggers teardown. `TransientError` (429, 5xx, operation in progress,
read timeouts) is retried with backoff. Gateways translate SDK exceptions into these with
`raise ... from e`; nothing above a gateway catches an SDK exception.
"""

from __future__ import annotations


class GkeLlmFlowsError(Exception):
    """Base of every error this project raises on purpose."""


class PermanentError(GkeLlmFlowsError):
    """Retrying the same call will not help: fail the run and tear down."""


class TransientError(GkeLlmFlowsError):
    """The same call may succeed later: retry with backoff and jitter."""


class SpecError(PermanentError, ValueError):
    """The stack spec is invalid. Carries every problem found, each naming its field."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid stack spec:\n" + "\n".join(f"  - {p}" for p in self.problems))


class NotOursError(PermanentError):
    """A resource exists whose owner labels do not name this stack: we refuse to touch it."""


class DriftError(PermanentError):
    """A live resource differs from the spec in a field that cannot be updated in place."""


class CapacityError(PermanentError):
    """No allowed zone or capacity mode could supply the GPUs (stockout or quota)."""


class Stockout(CapacityError):
    """A zone had no capacity for the requested machines in this capacity mode (GCE_STOCKOUT)."""


class QuotaExceeded(CapacityError):
    """A project or regional quota (GPUs, CPUs, IPs, SSD) is too small for the request."""


class PermissionDenied(PermanentError):
    """The credentials may not make this call (401/403 other than quota)."""


class InvalidRequest(PermanentError):
    """The API rejected the request as malformed or not allowed (400 invalid argument, other 4xx)."""


class ResourceNotFound(PermanentError):
    """A resource the call depends on does not exist (e.g. a node pool's cluster)."""


class OperationFailed(PermanentError):
    """A long-running operation finished DONE with an error (DONE alone is not success)."""


class ApiUnavailable(TransientError):
    """The API answered 429/5xx, or the connection failed or timed out: try again later."""


class ResourceBusy(TransientError):
    """Another operation holds the resource ("operation in progress"): try again once it is done."""


class AlreadyExists(TransientError):
    """A create found the resource already there (409): observe it again and converge from there."""


class RolloutFailed(PermanentError):
    """The serving stack showed a fatal sign (image pull, crash loop, OOM, deploy failed...)."""


class WaitTimedOut(PermanentError):
    """A wait passed its deadline without reaching the ready state."""


class ValidationFailed(PermanentError):
    """The endpoint answered, but not correctly (status, finish reason, model list or answer)."""


def only_transient_errors(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a task only when it failed with a `TransientError`."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final for the retry policy
        return False
    return False

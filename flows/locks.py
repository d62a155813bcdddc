"""One lifecycle operation per stack at a time: a Prefect global concurrency limit per stack.

A spin-down waits for a spin-up of the same stack to finish (and the reverse) instead of racing it.
The limit is created on first use, so a fresh server needs no setup step for it; `strict=True` then
guarantees the block never runs unguarded. Slots are leases: a killed holder frees its slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LOCK_PREFIX = "gke-llm-flows-stack-"
# A holder that dies keeps the slot this long (Prefect's minimum lease is 60 s).
LEASE_DURATION_S = 60


def lock_name(stack: str) -> str:
    return f"{LOCK_PREFIX}{stack}"


def ensure_stack_limit(stack: str) -> str:
    """Create the stack's limit (1 slot) if it does not exist yet; return its name. Idempotent."""
    name = lock_name(stack)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another run created it between our read and our create
    return name


@contextmanager
def stack_lock(stack: str, *, timeout_s: float | None) -> Iterator[None]:
    """Hold the stack's only slot for the duration of the block (wait up to `timeout_s` wall seconds)."""
    name = ensure_stack_limit(stack)
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True,
                     lease_duration=LEASE_DURATION_S):
        yield

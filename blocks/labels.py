"""Owner labels: how every resource we create says it is ours, for which stack, and until when.

The same keys serve GKE `resource_labels` and Kubernetes `metadata.labels`, so they obey the stricter
of the two rule sets (GCE labels: lowercase letters, digits, `-` and `_`, at most 63 characters, no `/`).
Teardown and the janitor act only on resources whose labels say they are ours.
"""

from __future__ import annotations

MANAGED_BY_KEY = "managed-by"
MANAGED_BY_VALUE = "gke-llm-flows"
STACK_KEY = "gke-llm-flows-stack"
# Lease expiry as Unix seconds (digits only, valid in both label syntaxes); the janitor compares it
# with the clock and tears down what is past it.
LEASE_EXPIRY_KEY = "gke-llm-flows-lease-expiry"
# The Prefect flow run that created or last renewed the resource; the janitor tears down resources
# whose run is no longer alive.
RUN_ID_KEY = "gke-llm-flows-run-id"


def owner_labels(stack: str, *, lease_expiry_epoch_s: int | None = None,
                 run_id: str | None = None) -> dict[str, str]:
    """Return the labels that mark a resource as created by us for `stack`."""
    labels = {MANAGED_BY_KEY: MANAGED_BY_VALUE, STACK_KEY: stack}
    if lease_expiry_epoch_s is not None:
        labels[LEASE_EXPIRY_KEY] = str(int(lease_expiry_epoch_s))
    if run_id is not None:
        labels[RUN_ID_KEY] = run_id
    return labels


def is_ours(labels: dict[str, str] | None, stack: str | None = None) -> bool:
    """True when `labels` say we manage the resource (and, if given, for `stack`)."""
    labels = labels or {}
    if labels.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE:
        return False
    return stack is None or labels.get(STACK_KEY) == stack

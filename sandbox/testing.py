"""Helpers for tests that need a running sandbox.

```python
from sandbox.testing import running_sandbox
with running_sandbox(time_scale=600) as sandbox: ...

# or, in a conftest.py:  from sandbox.testing import gke_sandbox  # noqa: F401  (a pytest fixture)
```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from sandbox.app import Sandbox
from sandbox.hooks import ClusterHooks

T = TypeVar("T")
TEST_TIME_SCALE = 600.0     # a 9-minute A3 pool create takes under a second
FAST_TIME_SCALE = 3000.0    # for tests that only need operations to finish (a cluster create in ~0.1 s)


@contextmanager
def running_sandbox(time_scale: float = TEST_TIME_SCALE, profile: str = "realistic", seed: int = 0,
                    hooks: ClusterHooks | None = None, kubernetes: bool = False) -> Iterator[Sandbox]:
    """A started Sandbox on a free port (with simulated Kubernetes if asked), stopped on exit."""
    sandbox = Sandbox(time_scale=time_scale, profile=profile, seed=seed, port=0, hooks=hooks,
                      kubernetes=kubernetes)
    with sandbox:
        yield sandbox


def wait_for(condition: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.02,
             what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; return it, or fail after `timeout_s` real seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value {value!r}")
        time.sleep(interval_s)


def pool_inventory(sandbox: Sandbox, cluster: str, pool: str) -> dict[str, Any] | None:
    """The inventory entry of one node pool, or None when it does not exist."""
    for entry in sandbox.inventory()["clusters"]:
        if entry["name"] == cluster:
            return next((p for p in entry["node_pools"] if p["name"] == pool), None)
    return None


@pytest.fixture
def gke_sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox per test at 3000x, GKE only (no Kubernetes hooks)."""
    with running_sandbox(time_scale=FAST_TIME_SCALE) as sandbox:
        yield sandbox

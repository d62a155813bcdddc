"""End-to-end fixtures: the sandbox with simulated Kubernetes and a stack file aimed at it.

The real Prefect server fixture (`prefect_server`) lives in tests/conftest.py.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def sandbox_stack(tmp_path, monkeypatch):
    """A sandbox with simulated Kubernetes at E2E_TIME_SCALE, the flows' clock agreeing with it, and a stack file
    (examples/sandbox.yaml) aimed at it. Yields (sandbox, StackRef)."""
    from flows.demo import demo_stack_file
    from flows.stack_ref import StackRef
    from sandbox.app import Sandbox
    from tasks.clock import TIME_SCALE_ENV

    with Sandbox(time_scale=E2E_TIME_SCALE, kubernetes=True) as sandbox:
        monkeypatch.setenv(TIME_SCALE_ENV, sandbox.flows_clock_env())
        yield sandbox, StackRef(file=str(demo_stack_file(sandbox.gke_url, tmp_path)))


E2E_TIME_SCALE = 200.0


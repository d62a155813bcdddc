"""Fixtures the GKE integration modules share: one sandbox per module, a clock at its time scale.

A module that needs another sandbox (a seed, a function scope) defines its own `sandbox`, which wins.
"""

from __future__ import annotations

import pytest

from sandbox.testing import running_sandbox
from tasks.clock import ScaledClock
from tests.integration.gke_support import TIME_SCALE


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(time_scale=TIME_SCALE) as sandbox:
        yield sandbox


@pytest.fixture
def clock():
    return ScaledClock(TIME_SCALE)

"""Unit-test fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect API (SQLite) for the session; yields its API URL. Starts once (~8 s)."""
    import os

    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)  # keep the user's ~/.prefect out of tests
    try:
        with prefect_test_harness(server_startup_timeout=60):
            yield str(get_current_settings().api.url)
    finally:
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous

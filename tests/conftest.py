"""Shared pytest set-up: fixtures for real services live in tests/fixtures/ as plugins.

With ``DFMOD_REQUIRE_INTEGRATION=1`` (set by ``scripts/test`` and CI) an integration test that
skips counts as failed: a run that never reached real Triton, Celery or the databases proves
nothing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

# Each plugin owns the lifetime of one real component (Triton, databases, broker, worker).
_PLUGINS = ["tests.fixtures.triton", "tests.fixtures.services", "tests.fixtures.stack"]
pytest_plugins = [p for p in _PLUGINS if importlib.util.find_spec(p) is not None]


def integration_required() -> bool:
    """Returns whether skipping an integration test must fail the run."""
    return os.environ.get("DFMOD_REQUIRE_INTEGRATION", "0") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and integration_required() and item.get_closest_marker("integration"):
        report.outcome = "failed"
        report.longrepr = (
            "integration test skipped while DFMOD_REQUIRE_INTEGRATION=1 "
            f"(its real component must be reachable): {report.longrepr}"
        )

"""Shared pytest set-up: fixtures for real services live in tests/fixtures/ as plugins."""

import importlib.util

# Each plugin owns the lifetime of one real component (Triton, databases, broker, worker).
_PLUGINS = ["tests.fixtures.triton", "tests.fixtures.services", "tests.fixtures.stack"]
pytest_plugins = [p for p in _PLUGINS if importlib.util.find_spec(p) is not None]

"""Shared pytest set-up: the fixtures for real components live in tests/fixtures/, as plugins.

Each plugin owns one real component (the database, Redis, Triton, the worker's functions, the
Flask app, the platform's HTTP side, the browser); ``tests/fixtures/integration.py`` decides
whether a test whose component is unavailable skips or fails. Modules without fixtures
(``tests/fixtures/media.py``, ``stack.py``, ``processes.py``, ``waiting.py``) are imported where
they are used; no test imports from a conftest.
"""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.integration",
    "tests.fixtures.database",
    "tests.fixtures.redis",
    "tests.fixtures.triton",
    "tests.fixtures.receiver",
    "tests.fixtures.worker",
    "tests.fixtures.flask_app",
    "tests.fixtures.browser",
]

"""The dashboard tests' app has a reviewer, alice, who logs in with ``login`` from
``tests/fixtures/flask_app.py``."""

from __future__ import annotations

import pytest

from tests.fixtures.flask_app import PASSWORD, REVIEWER


@pytest.fixture()
def reviewers() -> dict[str, str]:
    return {REVIEWER: PASSWORD}

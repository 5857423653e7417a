"""The application factory: layered configuration, no module-level app, per-app state."""

from __future__ import annotations

from pathlib import Path

import pytest

import webhook_api
from moderation.db import migrate
from webhook_api import REQUEST_OVERHEAD_BYTES, create_app


def test_no_module_level_app_or_engine() -> None:
    assert not any(hasattr(webhook_api, name) for name in ("app", "engine", "celery"))


def test_settings_come_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DFMOD_DATABASE_URL", url)
    monkeypatch.setenv("DFMOD_MAX_UPLOAD_BYTES", "1000")
    app = create_app()
    try:
        assert app.extensions["dfmod"].settings.resolved_database_url == url
        assert app.config["MAX_CONTENT_LENGTH"] == 1000 + REQUEST_OVERHEAD_BYTES
    finally:
        app.extensions["dfmod"].engine.dispose()


def test_test_config_overrides_settings_derived_values(settings, auth) -> None:
    app = create_app(settings, {"TESTING": True, "MAX_CONTENT_LENGTH": 10})
    try:
        assert app.testing and app.config["MAX_CONTENT_LENGTH"] == 10
        response = app.test_client().post(
            "/v1/submissions", data=b"x" * 100, content_type="application/json", headers=auth
        )
        assert response.status_code == 413
    finally:
        app.extensions["dfmod"].engine.dispose()


def test_two_apps_keep_separate_state(settings, tmp_path: Path) -> None:
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(other_url)
    first = create_app(settings)
    second = create_app(settings.replace(database_url=other_url))
    try:
        assert first.extensions["dfmod"].engine is not second.extensions["dfmod"].engine
        assert str(second.extensions["dfmod"].engine.url) == other_url
    finally:
        first.extensions["dfmod"].engine.dispose()
        second.extensions["dfmod"].engine.dispose()

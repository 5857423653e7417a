"""Alembic migrations: upgrade to head on empty SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from moderation.db import alembic_config, current_revision, make_engine, migrate
from moderation.models import Base
from tests.fixtures.services import fresh_postgres_database

EXPECTED_TABLES = {
    "tenants",
    "submissions",
    "verdicts",
    "callback_deliveries",
    "reviews",
    "model_versions",
    "idempotency_keys",
}


def _check_upgrade_head(url: str) -> None:
    assert current_revision(url) is None
    migrate(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    migrate(url)  # a second run is a no-op
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_upgrade_head_on_empty_sqlite(sqlite_url: str) -> None:
    _check_upgrade_head(sqlite_url)


@pytest.mark.integration
def test_upgrade_head_on_empty_postgresql() -> None:
    with fresh_postgres_database() as url:
        _check_upgrade_head(url)

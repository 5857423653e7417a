"""Alembic migrations: upgrade to head on empty SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from moderation.db import alembic_config, current_revision, make_engine, migrate
from moderation.models import Base
from tests.fixtures.database import fresh_postgres_database

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


def _check_0005_adds_tenant_rate_limit(url: str) -> None:
    from alembic import command

    migrate(url, "0004")
    engine = make_engine(url)
    try:
        assert "rate_limit_per_minute" not in {
            c["name"] for c in inspect(engine).get_columns("tenants")
        }
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, api_key_prefix, api_key_hash, webhook_secret,"
                    " active, created_at) VALUES ('ten_old', 'old', 'p', 'h', 's', :t, :now)"
                ),
                {"t": True, "now": dt.datetime.now(dt.timezone.utc)},
            )
        migrate(url, "0005")
        inspector = inspect(engine)
        column = {c["name"]: c for c in inspector.get_columns("tenants")}["rate_limit_per_minute"]
        assert column["nullable"] is True
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, rate_limit_per_minute FROM tenants")).all()
        assert [tuple(row) for row in rows] == [("old", None)]  # existing tenants: the default
        command.downgrade(alembic_config(url), "0004")
        engine.dispose()
        names = {c["name"] for c in inspect(engine).get_columns("tenants")}
        assert "rate_limit_per_minute" not in names and "previous_webhook_secret" in names
    finally:
        engine.dispose()


def test_0005_adds_tenant_rate_limit_on_sqlite(sqlite_url: str) -> None:
    _check_0005_adds_tenant_rate_limit(sqlite_url)


@pytest.mark.integration
def test_0005_adds_tenant_rate_limit_on_postgresql() -> None:
    with fresh_postgres_database() as url:
        _check_0005_adds_tenant_rate_limit(url)

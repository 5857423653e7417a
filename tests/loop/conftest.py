"""Fixtures for the retrain loop: a tiny demo data set, a migrated database and blob store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory, migrate
from tests.fixtures.database import create_test_tenant
from training.demo_data import generate


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Demo images: ``base`` (12 per class) and a disjoint fixed ``holdout`` (8 per class)."""
    root = tmp_path_factory.mktemp("loop-data")
    generate(root / "base", per_class=12, seed=11, size=128)
    generate(root / "holdout", per_class=8, seed=12, size=128)
    generate(root / "reviewed", per_class=6, seed=13, size=128, manifest=False)
    return {name: root / name for name in ("base", "holdout", "reviewed")}


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    """A migrated SQLite database: (url, session factory)."""
    url = f"sqlite:///{tmp_path / 'data' / 'dfmod.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        yield url, make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture()
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "data" / "blobs")


@pytest.fixture()
def tenant_id(database: tuple[str, sessionmaker[Session]]) -> str:
    return create_test_tenant(database[0])[0]

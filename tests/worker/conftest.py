"""Fixtures for the worker's plain functions: a migrated SQLite database, blobs, a receiver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory, migrate, session_scope
from moderation.models import MediaKind, Status, Submission
from moderation.settings import Settings, load_settings
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.services import create_test_tenant


@dataclass
class WorkerEnv:
    settings: Settings
    session_factory: sessionmaker[Session]
    blobs: BlobStore
    tenant_id: str
    secret: str

    def submission(self, **fields: object) -> str:
        """Inserts a submission row and returns its id."""
        values: dict[str, object] = {
            "tenant_id": self.tenant_id,
            "media_kind": MediaKind.UPLOAD,
            "status": Status.QUEUED,
        }
        values.update(fields)
        with session_scope(self.session_factory) as session:
            sub = Submission(**values)
            session.add(sub)
            session.flush()
            return sub.id


def worker_settings(url: str, data_dir: Path) -> Settings:
    """Settings for worker tests on ``url``: loopback receivers allowed, short timeouts."""
    return load_settings(
        environ={},
        data_dir=data_dir,
        database_url=url,
        outbound_allowlist="127.0.0.0/8",
        callback_timeout_s=1.0,
        fetch_timeout_s=2.0,
    )


@pytest.fixture(scope="module")
def _migrated_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('worker-db') / 'dfmod.db'}"
    migrate(url)
    return url


@pytest.fixture()
def worker_env(_migrated_db: str, tmp_path: Path) -> Iterator[WorkerEnv]:
    url = _migrated_db
    tenant_id, _key, secret = create_test_tenant(url)
    settings = worker_settings(url, tmp_path)
    engine = make_engine(url)
    yield WorkerEnv(
        settings, make_session_factory(engine), BlobStore(tmp_path / "blobs"), tenant_id, secret
    )
    engine.dispose()


@pytest.fixture()
def receiver(worker_env: WorkerEnv) -> Iterator[CallbackReceiver]:
    with CallbackReceiver(secret=worker_env.secret) as server:
        yield server


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """Returns a small real image encoded in ``fmt``."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


def submission_row(env: WorkerEnv, submission_id: str) -> Submission:
    """Returns a detached copy of a submission row."""
    with session_scope(env.session_factory) as session:
        sub = session.get(Submission, submission_id)
        assert sub is not None
        return sub

"""What a worker process needs to run a task: settings, database sessions, blobs, Triton.

Built lazily once per process (after a prefork worker forks, never before), so no engine or gRPC
channel is shared across processes. Plain functions in ``worker/`` take these as keyword
arguments; only :mod:`worker.tasks` and the CLI build a :class:`WorkerDeps`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory
from moderation.settings import Settings

if TYPE_CHECKING:
    from moderation.bank_index import BankMatcher
    from serving.client import TritonClient

logger = logging.getLogger(__name__)


@dataclass
class WorkerDeps:
    """The dependencies of the worker's plain functions, for one process."""

    settings: Settings
    session_factory: sessionmaker[Session]
    blobs: BlobStore
    _client: TritonClient | None = field(default=None, repr=False)
    _matcher: BankMatcher | None = field(default=None, repr=False)

    @property
    def matcher(self) -> BankMatcher:
        """Returns the process's bank index (loaded from SQL on first use)."""
        if self._matcher is None:
            from moderation.bank_index import BankMatcher

            self._matcher = BankMatcher(
                session_factory=self.session_factory,
                max_distance=self.settings.bank_match_distance,
                video_share=self.settings.bank_video_match_share,
                min_quality=self.settings.bank_min_quality,
            )
        return self._matcher

    @property
    def client(self) -> TritonClient:
        """Returns the process's Triton client (created on first use)."""
        if self._client is None:
            from serving.client import get_client
            from worker.metrics import JOINED_IMAGES

            self._client = get_client(self.settings, on_joined=JOINED_IMAGES.observe)
        return self._client

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerDeps:
        """Returns fresh dependencies built from settings."""
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            session_factory=make_session_factory(engine),
            blobs=BlobStore(settings.blob_dir),
        )


_lock = threading.Lock()
_cache: dict[Settings, WorkerDeps] = {}


def deps_for(settings: Settings) -> WorkerDeps:
    """Returns the cached dependencies of this process for these settings."""
    with _lock:
        deps = _cache.get(settings)
        if deps is None:
            deps = _cache[settings] = WorkerDeps.from_settings(settings)
        return deps

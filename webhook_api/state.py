"""Per-application state: settings, the engine and session factory, blobs, the Celery client.

One :class:`AppState` lives in ``app.extensions["dfmod"]``; nothing is created at import time.
The Celery app and the Triton client are built on first use, so a process that never enqueues or
probes Triton never connects to them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory
from moderation.settings import Settings
from moderation.ssrf import Network, parse_allowlist

logger = logging.getLogger(__name__)

EXTENSION = "dfmod"


@dataclass
class AppState:
    """Everything a request handler needs besides the request."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    blobs: BlobStore
    allowlist: tuple[Network, ...]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _celery: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        """Returns state built from settings (engine created, nothing connected yet)."""
        # One connection per request thread, and one for the metrics scrape.
        engine = make_engine(
            settings.resolved_database_url, postgres_pool_size=settings.api_threads + 1
        )
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            blobs=BlobStore(settings.blob_dir),
            allowlist=parse_allowlist(settings.outbound_allowlist),
        )

    @property
    def celery(self) -> Any:
        """Returns the Celery app used to enqueue by task name (built once, thread-safe)."""
        with self._lock:
            if self._celery is None:
                from worker.enqueue import publisher

                self._celery = publisher(self.settings)
            return self._celery

    def init_app(self, app: Flask) -> None:
        """Stores the state on ``app``."""
        app.extensions[EXTENSION] = self


def state() -> AppState:
    """Returns the state of the current application."""
    return current_app.extensions[EXTENSION]

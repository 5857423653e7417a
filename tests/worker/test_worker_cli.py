"""``dfmod worker``'s Celery arguments: pool choice, and the embedded broker refusing prefork."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from moderation.settings import Settings
from worker.cli import worker_argv


def _settings(tmp_path: Path, broker_url: str = "", database_url: str = "") -> Settings:
    return Settings(data_dir=tmp_path, broker_url=broker_url, database_url=database_url)


def test_embedded_stack_defaults_to_threads_and_has_no_forked_beat(tmp_path: Path) -> None:
    argv = worker_argv(_settings(tmp_path), pool=None, concurrency=None, loglevel="INFO")
    assert "--pool=threads" in argv
    assert "--concurrency=4" in argv
    assert not any(arg.startswith(("--beat", "-B")) for arg in argv)


def test_redis_and_postgres_default_to_prefork(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "redis://127.0.0.1:6379/0", "postgresql://u@h/db")
    argv = worker_argv(settings, pool=None, concurrency=2, loglevel="INFO")
    assert "--pool=prefork" in argv and "--concurrency=2" in argv


def test_sqlite_broker_refuses_prefork_with_what_to_use_instead(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="--pool threads or solo, or a Redis"):
        worker_argv(_settings(tmp_path), pool="prefork", concurrency=2, loglevel="INFO")

"""Files rewritten on every request (metrics, gunicorn heartbeats) go to /dev/shm if it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moderation import scratch
from moderation.settings import load_settings
from webhook_api.cli import gunicorn_options
from worker.cli import METRICS_DIR_ENV, prepare_metrics


def test_scratch_dir_is_shared_memory_when_writable_else_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "SHARED_MEMORY", tmp_path)
    assert scratch.scratch_dir(Path("/elsewhere")) == tmp_path
    monkeypatch.setattr(scratch, "SHARED_MEMORY", tmp_path / "missing")
    assert scratch.scratch_dir(Path("/elsewhere")) == Path("/elsewhere")
    assert scratch.scratch_dir() is None


def test_gunicorn_heartbeats_and_worker_metrics_use_the_scratch_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.setattr(scratch, "SHARED_MEMORY", memory)
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    settings = load_settings(environ={}, data_dir=tmp_path / "var", worker_metrics_port=9999)
    assert gunicorn_options(settings)["worker_tmp_dir"] == str(memory)
    folder = prepare_metrics(settings)
    assert folder is not None and folder.parent == memory
    assert os.environ[METRICS_DIR_ENV] == str(folder)
    monkeypatch.delenv(METRICS_DIR_ENV)


def test_without_shared_memory_the_worker_metrics_stay_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "SHARED_MEMORY", tmp_path / "missing")
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    settings = load_settings(environ={}, data_dir=tmp_path / "var", worker_metrics_port=9999)
    assert gunicorn_options(settings)["worker_tmp_dir"] is None
    folder = prepare_metrics(settings)
    assert folder is not None and folder.parent == tmp_path / "var"
    monkeypatch.delenv(METRICS_DIR_ENV)

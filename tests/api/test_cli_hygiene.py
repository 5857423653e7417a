"""The ``dfmod`` command line as scripts use it: --json is one JSON document per line on standard
output, logs go to standard error, and ``dfmod --help`` documents the exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from moderation.db import migrate
from moderation.settings import PROJECT_ROOT


def _dfmod(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moderation.cli", *args],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_documents_the_exit_codes() -> None:
    result = _dfmod("--help", env={})
    assert result.returncode == 0
    for line in ("Exit codes:", "0  success", "1  error", "2  usage error", "3  `dfmod retrain`"):
        assert line in result.stdout, result.stdout
    assert "one JSON document per line" in result.stdout


def test_json_output_is_one_line_per_document_and_logs_go_to_stderr(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dfmod.db'}"
    migrate(url)
    env = {"DFMOD_DATABASE_URL": url, "DFMOD_DATA_DIR": str(tmp_path), "DFMOD_LOG_LEVEL": "INFO"}
    result = _dfmod("tenant", "create", "acme", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    created = json.loads(result.stdout)
    assert set(created) == {"tenant_id", "name", "api_key", "webhook_secret"}
    assert "created tenant" in result.stderr  # the log line, on standard error only
    again = _dfmod("tenant", "create", "acme", "--json", env=env)
    assert again.returncode == 1 and again.stdout == "" and again.stderr.strip()


def test_a_usage_error_exits_2() -> None:
    assert _dfmod("tenant", "create", env={}).returncode == 2


def test_the_worker_prints_nothing_on_stdout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dfmod.db'}"
    migrate(url)
    env = {
        **os.environ,
        "DFMOD_DATABASE_URL": url,
        "DFMOD_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "DFMOD_DATA_DIR": str(tmp_path),
        "DFMOD_TRITON_GRPC_PORT": "1",
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moderation.cli", "worker", "--concurrency", "1"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while b" ready." not in err.read_bytes():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert out.read_bytes() == b"", out.read_text()
    assert b"celery@" in err.read_bytes()  # the banner, on standard error

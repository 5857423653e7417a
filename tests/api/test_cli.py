"""``dfmod migrate``, ``dfmod tenant create`` and ``dfmod api`` (a real gunicorn server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from moderation.cli import main
from moderation.db import current_revision, make_engine, make_session_factory, session_scope
from moderation.models import Tenant
from tests.fixtures.media import flat_image


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DFMOD_DATA_DIR": str(tmp_path / "var"),
        "DFMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "DFMOD_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    }


def test_migrate_then_tenant_create_json(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    result = runner.invoke(main, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert current_revision(env["DFMOD_DATABASE_URL"]) is not None

    result = runner.invoke(main, ["tenant", "create", "acme", "--json"], env=env)
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["api_key"].startswith("dfm_")
    assert created["webhook_secret"].startswith("whsec_")
    assert created["name"] == "acme" and created["tenant_id"].startswith("ten_")

    again = runner.invoke(main, ["tenant", "create", "acme"], env=env)
    assert again.exit_code != 0 and "already exists" in again.output


def test_tenant_create__fail_before_migrate(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tenant", "create", "acme"], env=_env(tmp_path))
    assert result.exit_code != 0 and "dfmod migrate" in result.output


def _rate_limit(url: str, name: str) -> int | None:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return session.scalars(
                select(Tenant.rate_limit_per_minute).where(Tenant.name == name)
            ).one()
    finally:
        engine.dispose()


def test_tenant_set_rate_limit_sets_clears_and_refuses(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    url = env["DFMOD_DATABASE_URL"]
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    assert runner.invoke(main, ["tenant", "create", "acme"], env=env).exit_code == 0
    assert _rate_limit(url, "acme") is None

    result = runner.invoke(main, ["tenant", "set-rate-limit", "acme", "--per-minute", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 submissions per minute" in result.output and _rate_limit(url, "acme") == 3
    result = runner.invoke(main, ["tenant", "set-rate-limit", "acme", "--per-minute", "0"], env=env)
    assert result.exit_code == 0 and "unlimited" in result.output
    assert _rate_limit(url, "acme") == 0
    cleared = runner.invoke(
        main,
        ["tenant", "set-rate-limit", "acme", "--default"],
        env={**env, "DFMOD_RATE_LIMIT_PER_MINUTE": "42"},
    )
    assert cleared.exit_code == 0, cleared.output
    assert "global default" in cleared.output and "42 per minute" in cleared.output
    assert _rate_limit(url, "acme") is None

    runner.invoke(main, ["tenant", "set-rate-limit", "acme", "--per-minute", "7"], env=env)
    refusals = {
        "negative": ["acme", "--per-minute", "-1"],
        "unknown": ["nobody", "--per-minute", "5"],
        "neither": ["acme"],
        "both": ["acme", "--per-minute", "5", "--default"],
        "not a number": ["acme", "--per-minute", "many"],
    }
    outputs = {}
    for case, args in refusals.items():
        refused = runner.invoke(main, ["tenant", "set-rate-limit", *args], env=env)
        assert refused.exit_code != 0, case
        outputs[case] = refused.output
    assert "-1 is negative; expected 0 (unlimited) or more" in outputs["negative"]
    assert "no tenant named 'nobody'" in outputs["unknown"]
    assert "expected exactly one of --per-minute N or --default" in outputs["neither"]
    assert "expected exactly one of --per-minute N or --default" in outputs["both"]
    assert _rate_limit(url, "acme") == 7  # no refusal changed the stored limit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(base: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dfmod api exited with {process.returncode}")
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.2)
    pytest.fail("dfmod api did not answer /healthz in time")


@pytest.mark.slow
def test_dfmod_api_serves_real_http_concurrently_with_shared_metrics(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, **_env(tmp_path), "DFMOD_API_PORT": str(port)}
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    key = json.loads(runner.invoke(main, ["tenant", "create", "acme", "--json"], env=env).stdout)[
        "api_key"
    ]
    command = [sys.executable, "-m", "moderation.cli", "api", "--workers", "2", "--threads", "4"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        headers = {"Authorization": f"Bearer {key}"}
        posted = requests.post(
            f"{base}/v1/submissions",
            files={"file": ("a.png", flat_image(), "image/png")},
            headers=headers,
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        location = posted.headers["Location"]
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        requests.get(base + location, headers=headers, timeout=10).status_code
                    ),
                    range(16),
                )
            )
        assert codes == [200] * 16
        # Two worker processes: every scrape must report the sum over both of them.
        for _ in range(4):
            text = requests.get(f"{base}/metrics", timeout=10).text
            assert (
                'dfmod_http_requests_total{method="GET",route="/v1/submissions/<submission_id>",'
                'status="200"} 16.0' in text
            )
            assert 'dfmod_submissions{status="queued"} 1.0' in text
    finally:
        process.terminate()
        process.wait(timeout=30)

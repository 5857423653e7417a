"""Signing-secret rotation: during the overlap callbacks carry both secrets' signatures.

``dfmod tenant rotate-secret NAME --overlap-hours H`` keeps the previous secret with an expiry;
the real worker then signs each callback with every live secret as space-separated ``v1,``
entries (Standard Webhooks), so a receiver holding either secret verifies it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from moderation import signing
from moderation.db import make_engine, make_session_factory, session_scope
from moderation.models import Tenant
from moderation.tenants import signing_secrets
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import Stack, embedded_stack, triton_env
from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import make_app
from webhook_api.cli import tenant_group

PNG = valid_bases()["png_rgb"]


def _tenant(url: str, name: str) -> Tenant:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            tenant = session.query(Tenant).filter_by(name=name).one()
            session.expunge(tenant)
            return tenant
    finally:
        engine.dispose()


def test_rotate_secret_cli_keeps_the_old_secret_until_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = make_app(tmp_path)
    app.extensions["dfmod"].engine.dispose()
    monkeypatch.setenv("DFMOD_DATABASE_URL", url)
    runner = CliRunner()
    assert runner.invoke(tenant_group, ["create", "acme"]).exit_code == 0
    old = _tenant(url, "acme").webhook_secret
    result = runner.invoke(tenant_group, ["rotate-secret", "acme", "--overlap-hours", "2"])
    assert result.exit_code == 0, result.output
    tenant = _tenant(url, "acme")
    assert tenant.webhook_secret in result.output and old not in result.output
    assert tenant.previous_webhook_secret == old != tenant.webhook_secret
    assert signing_secrets(tenant) == (tenant.webhook_secret, old)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2, minutes=1)
    assert signing_secrets(tenant, now=later) == (tenant.webhook_secret,)
    missing = runner.invoke(tenant_group, ["rotate-secret", "nobody"])
    assert missing.exit_code != 0 and "no tenant named" in missing.output
    negative = runner.invoke(tenant_group, ["rotate-secret", "acme", "--overlap-hours", "-1"])
    assert negative.exit_code != 0


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = embedded_stack(tmp_path_factory.mktemp("rotation"), triton_env(triton_server))
    with started:
        yield started


def _rotate(stack: Stack, name: str, hours: str) -> str:
    env = {**os.environ, "DFMOD_DATABASE_URL": stack.database_url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moderation.cli",
            "tenant",
            "rotate-secret",
            name,
            "--overlap-hours",
            hours,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split("webhook_secret:", 1)[1].strip()


def _callback(stack: Stack, key: str, receiver: CallbackReceiver, path: str) -> dict[str, str]:
    response = stack.submit_file(key, PNG, callback_url=receiver.url(path))
    assert response.status_code == 202, response.text
    stack.wait_final(key, response.json()["id"], timeout_s=60)
    (received,) = receiver.wait_for(1, path=path, timeout_s=30)
    headers = {k.lower(): v for k, v in received.headers.items()}
    headers["body"] = received.body.decode()
    return headers


def _verifies(secret: str, headers: dict[str, str]) -> bool:
    try:
        signing.verify(
            secret,
            headers["webhook-id"],
            headers["webhook-timestamp"],
            headers["body"],
            headers["webhook-signature"],
        )
    except signing.SignatureError:
        return False
    return True


@pytest.mark.integration
def test_callbacks_carry_both_signatures_during_the_overlap(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    keys = stack.tenant()
    tenant_name = _find_name(stack, keys.id)
    first = _callback(stack, keys.api_key, callback_receiver, "/before")
    assert len(first["webhook-signature"].split()) == 1 and _verifies(keys.secret, first)
    new = _rotate(stack, tenant_name, "1")
    during = _callback(stack, keys.api_key, callback_receiver, "/during")
    entries = during["webhook-signature"].split()
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    assert _verifies(keys.secret, during) and _verifies(new, during)
    newest = _rotate(stack, tenant_name, "0")  # no overlap: only the newest secret signs
    after = _callback(stack, keys.api_key, callback_receiver, "/after")
    assert len(after["webhook-signature"].split()) == 1
    assert (
        _verifies(newest, after) and not _verifies(new, after) and not _verifies(keys.secret, after)
    )


def _find_name(stack: Stack, tenant_id: str) -> str:
    with stack.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return tenant.name

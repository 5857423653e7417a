"""A real Flask app of the webhook API on a migrated SQLite file, for the input and access tests.

The broker is an SQLite file too and Triton is pointed at a closed port, so requests exercise
validation, authentication and storage without any worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from moderation.db import migrate
from moderation.settings import load_settings
from tests.fixtures.database import create_test_tenant
from webhook_api import create_app


def make_app(root: Path, *, database_url: str | None = None, **overrides: Any) -> tuple[Flask, str]:
    """Returns (app, database URL: SQLite under ``root`` unless given, migrated); settings default
    to small limits and an empty allow-list."""
    url = database_url or f"sqlite:///{root / 'dfmod.db'}"
    migrate(url)
    values: dict[str, Any] = {
        "data_dir": root / "var",
        "database_url": url,
        "broker_url": f"sqla+sqlite:///{root / 'broker.db'}",
        "max_upload_bytes": 64 * 1024,
        "triton_grpc_port": 1,
        "outbound_allowlist": "",
        **overrides,
    }
    return create_app(load_settings(environ={}, **values), {"TESTING": True}), url


def bearer(url: str, name: str | None = None) -> tuple[str, dict[str, str]]:
    """Creates a tenant; returns (tenant id, Authorization headers)."""
    tenant_id, key, _secret = create_test_tenant(url, name)
    return tenant_id, {"Authorization": f"Bearer {key}"}

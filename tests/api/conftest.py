"""The API tests' app: loopback receivers on IPv4 and IPv6, and a small upload limit."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture()
def app_overrides() -> dict[str, Any]:
    return {"outbound_allowlist": "127.0.0.0/8,::1/128", "max_upload_bytes": 64 * 1024}

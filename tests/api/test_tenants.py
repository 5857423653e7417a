"""Tenants: keys are stored hashed, authenticate only the exact key, thresholds validated, rate
limit overrides set and cleared."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from moderation.db import session_scope
from moderation.models import Tenant
from moderation.tenants import (
    TenantExists,
    authenticate,
    create_tenant,
    get_webhook_secret,
    hash_key,
    set_rate_limit,
    set_thresholds,
)
from webhook_api.limits import tenant_rate_limit


def test_create_stores_only_the_hash_and_authenticates_the_key(session_factory) -> None:
    with session_scope(session_factory) as session:
        created = create_tenant(session=session, name="acme")
    assert created.api_key.startswith("dfm_") and created.webhook_secret.startswith("whsec_")
    with session_scope(session_factory) as session:
        row = session.scalars(select(Tenant)).one()
        assert row.api_key_hash == hash_key(created.api_key)
        assert created.api_key not in (row.api_key_hash, row.api_key_prefix)
        info = authenticate(session=session, api_key=created.api_key)
        assert info is not None and info.id == created.tenant_id and info.name == "acme"
        assert get_webhook_secret(session=session, tenant_id=info.id) == created.webhook_secret


def test_authenticate__fail_on_wrong_or_inactive_keys(session_factory) -> None:
    with session_scope(session_factory) as session:
        created = create_tenant(session=session, name="acme")
    prefix = created.api_key.split("_")[1]
    with session_scope(session_factory) as session:
        for wrong in ["", "dfm_", f"dfm_{prefix}_", f"dfm_{prefix}_x_y", "x" * 64]:
            assert authenticate(session=session, api_key=wrong) is None
        session.scalars(select(Tenant)).one().active = False
    with session_scope(session_factory) as session:
        assert authenticate(session=session, api_key=created.api_key) is None


def test_create__fail_on_duplicate_or_empty_name(session_factory) -> None:
    with session_scope(session_factory) as session:
        create_tenant(session=session, name="acme")
    with pytest.raises(TenantExists), session_scope(session_factory) as session:
        create_tenant(session=session, name="acme")
    with pytest.raises(ValueError, match="non-empty"), session_scope(session_factory) as session:
        create_tenant(session=session, name="  ")


def test_set_thresholds_validates_and_clears(session_factory) -> None:
    with session_scope(session_factory) as session:
        created = create_tenant(session=session, name="acme")
    with session_scope(session_factory) as session:
        info = set_thresholds(
            session=session, tenant_id=created.tenant_id, pass_below=0.2, flag_at=0.9
        )
        assert (info.pass_below, info.flag_at) == (0.2, 0.9)
    with (
        pytest.raises(ValueError, match="pass_below <= flag_at"),
        session_scope(session_factory) as session,
    ):
        set_thresholds(session=session, tenant_id=created.tenant_id, pass_below=0.9, flag_at=0.2)
    with session_scope(session_factory) as session:
        info = set_thresholds(
            session=session, tenant_id=created.tenant_id, pass_below=None, flag_at=None
        )
        assert info.pass_below is None and info.flag_at is None


def test_set_rate_limit_sets_clears_and_authenticate_carries_it(session_factory) -> None:
    with session_scope(session_factory) as session:
        created = create_tenant(session=session, name="acme")
    with session_scope(session_factory) as session:
        info = authenticate(session=session, api_key=created.api_key)
        assert info is not None and info.rate_limit_per_minute is None
        assert tenant_rate_limit(info, 600) == 600
    for per_minute in (3, 0, None):
        with session_scope(session_factory) as session:
            assert (
                set_rate_limit(session=session, name="acme", per_minute=per_minute)
            ).rate_limit_per_minute == per_minute
        with session_scope(session_factory) as session:
            info = authenticate(session=session, api_key=created.api_key)
            assert info is not None and info.rate_limit_per_minute == per_minute
            assert tenant_rate_limit(info, 600) == {3: 3, 0: 0, None: 600}[per_minute]
    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match="expected 0"):
            set_rate_limit(session=session, name="acme", per_minute=-1)
        with pytest.raises(LookupError, match="no tenant named 'nobody'"):
            set_rate_limit(session=session, name="nobody", per_minute=5)

"""Tenants: creation with a fresh API key and webhook secret, key lookup, policy and rate-limit
overrides.

Only a key's prefix and SHA-256 are stored; the webhook secret is stored in clear (signing needs
it), returned once at creation and never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moderation import signing
from moderation.models import Tenant, utcnow
from moderation.policy import PROVENANCE_POLICIES, Thresholds

logger = logging.getLogger(__name__)

KEY_PREFIX = "dfm"


class TenantExists(ValueError):
    """A tenant with that name already exists."""


@dataclass(frozen=True)
class CreatedTenant:
    """What ``dfmod tenant create`` prints once: the only time the key is visible."""

    tenant_id: str
    name: str
    api_key: str
    webhook_secret: str


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as the API and workers see it (no key material)."""

    id: str
    name: str
    pass_below: float | None
    flag_at: float | None
    active: bool
    # Submissions per minute; None: the global default, 0: unlimited.
    rate_limit_per_minute: int | None = None


def hash_key(api_key: str) -> str:
    """Returns the hex SHA-256 of an API key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _split_key(api_key: str) -> str | None:
    parts = api_key.split("_", 2)  # the secret part may itself contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def _info(tenant: Any) -> TenantInfo:
    """Returns the TenantInfo of a Tenant, or of a Core row with its columns by name."""
    return TenantInfo(
        id=tenant.id,
        name=tenant.name,
        pass_below=tenant.pass_below,
        flag_at=tenant.flag_at,
        active=tenant.active,
        rate_limit_per_minute=tenant.rate_limit_per_minute,
    )


def create_tenant(*, session: Session, name: str) -> CreatedTenant:
    """Returns a new tenant's id, name, API key and webhook secret (flushed, not committed)."""
    name = name.strip()
    if not name:
        raise ValueError("expected a non-empty tenant name")
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise TenantExists(f"a tenant named {name!r} already exists; expected a new name")
    prefix = secrets.token_hex(6)
    api_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    tenant = Tenant(
        name=name,
        api_key_prefix=prefix,
        api_key_hash=hash_key(api_key),
        webhook_secret=signing.new_secret(),
    )
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:
        raise TenantExists(f"a tenant named {name!r} already exists") from exc
    logger.info("created tenant %s (%s)", tenant.id, name)
    return CreatedTenant(tenant.id, name, api_key, tenant.webhook_secret)


# The key lookup of every API request: the columns a TenantInfo needs and the key's hash (no
# ORM entity is built for a row the request only reads).
_BY_PREFIX = select(
    Tenant.id,
    Tenant.name,
    Tenant.pass_below,
    Tenant.flag_at,
    Tenant.active,
    Tenant.rate_limit_per_minute,
    Tenant.api_key_hash,
).where(Tenant.api_key_prefix == bindparam("prefix"))


def authenticate(*, session: Session, api_key: str) -> TenantInfo | None:
    """Returns the active tenant owning ``api_key``, or None (constant-time hash compare)."""
    prefix = _split_key(api_key)
    if prefix is None:
        return None
    row = session.execute(_BY_PREFIX, {"prefix": prefix}).first()
    if row is None or not row.active:
        return None
    if not hmac.compare_digest(row.api_key_hash, hash_key(api_key)):
        return None
    return _info(row)


def get_tenant(*, session: Session, tenant_id: str) -> TenantInfo | None:
    """Returns a tenant by id, or None."""
    tenant = session.get(Tenant, tenant_id)
    return None if tenant is None else _info(tenant)


def get_webhook_secret(*, session: Session, tenant_id: str) -> str:
    """Returns the tenant's ``whsec_`` secret (for signing callbacks; never log it)."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id!r}")
    return tenant.webhook_secret


def set_thresholds(
    *, session: Session, tenant_id: str, pass_below: float | None, flag_at: float | None
) -> TenantInfo:
    """Returns the tenant after setting (or clearing, with None) its policy overrides."""
    if pass_below is not None and flag_at is not None:
        Thresholds(pass_below=pass_below, flag_at=flag_at)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id!r}")
    tenant.pass_below, tenant.flag_at = pass_below, flag_at
    session.flush()
    return _info(tenant)


def set_rate_limit(*, session: Session, name: str, per_minute: int | None) -> TenantInfo:
    """Returns tenant ``name`` after setting its submissions per minute (0: unlimited) or, with
    None, clearing its override so the global ``rate_limit_per_minute`` applies."""
    if per_minute is not None and per_minute < 0:
        raise ValueError(f"per_minute is {per_minute}; expected 0 (unlimited) or more")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise LookupError(f"no tenant named {name!r}; expected a name from 'dfmod tenant create'")
    tenant.rate_limit_per_minute = per_minute
    session.flush()
    logger.info("tenant %s rate limit set to %s per minute", tenant.id, per_minute)
    return _info(tenant)


def set_provenance_policy(*, session: Session, name: str, policy: str | None) -> str | None:
    """Returns the provenance policy set for tenant ``name`` (None: the global
    ``provenance_policy`` applies again)."""
    if policy is not None and policy not in PROVENANCE_POLICIES:
        raise ValueError(f"policy {policy!r}; expected one of {', '.join(PROVENANCE_POLICIES)}")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise LookupError(f"no tenant named {name!r}; expected a name from 'dfmod tenant create'")
    tenant.provenance_policy = policy
    session.flush()
    logger.info("tenant %s provenance policy set to %s", tenant.id, policy or "the default")
    return policy


def rotate_secret(*, session: Session, name: str, overlap_hours: float) -> str:
    """Returns a new webhook secret for tenant ``name``; the old one keeps signing for a while.

    For ``overlap_hours`` after the rotation callbacks carry both secrets' signatures, so the
    platform can switch its receiver to the new secret without missing a callback.
    """
    if overlap_hours < 0:
        raise ValueError(f"overlap_hours is {overlap_hours}; expected 0 or more")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise LookupError(f"no tenant named {name!r}; expected a name from 'dfmod tenant create'")
    tenant.previous_webhook_secret = tenant.webhook_secret
    tenant.previous_secret_expires_at = utcnow() + dt.timedelta(hours=overlap_hours)
    tenant.webhook_secret = signing.new_secret()
    session.flush()
    logger.info("rotated the webhook secret of tenant %s (overlap %gh)", tenant.id, overlap_hours)
    return tenant.webhook_secret


def signing_secrets(tenant: Tenant, *, now: dt.datetime | None = None) -> tuple[str, ...]:
    """Returns the secrets that sign a callback now: the current one, plus the previous one
    while its overlap lasts."""
    expires = tenant.previous_secret_expires_at
    if tenant.previous_webhook_secret and expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.timezone.utc)
        if expires > (now or utcnow()):
            return (tenant.webhook_secret, tenant.previous_webhook_secret)
    return (tenant.webhook_secret,)

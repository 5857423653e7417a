"""Per-tenant submission rate limit, shared by every API process through the database.

A sliding window over the tenant's own submission rows; a refusal is a 429 problem whose
``Retry-After`` says when the oldest counted submission leaves the window.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.models import Submission, utcnow
from moderation.tenants import TenantInfo
from webhook_api.problems import ApiProblem

logger = logging.getLogger(__name__)

WINDOW_S = 60.0


def check_rate(*, session: Session, tenant_id: str, per_minute: int) -> None:
    """Raises a 429 :class:`ApiProblem` when the tenant made ``per_minute`` submissions in the
    last minute; ``per_minute`` 0 disables the limit."""
    if per_minute <= 0:
        return
    since = utcnow() - dt.timedelta(seconds=WINDOW_S)
    recent = (Submission.tenant_id == tenant_id) & (Submission.created_at > since)
    count, oldest = session.execute(
        select(func.count(), func.min(Submission.created_at)).where(recent)
    ).one()
    if count < per_minute:
        return
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.timezone.utc)
    wait = WINDOW_S if oldest is None else (oldest - since).total_seconds()
    retry_after = max(1, math.ceil(wait))
    logger.info("tenant %s over its rate limit (%d per minute)", tenant_id, per_minute)
    raise ApiProblem(
        429,
        "rate-limited",
        "Too many requests",
        f"this tenant sent {count} submissions in the last {WINDOW_S:g}s; expected at most "
        f"{per_minute} per minute. Retry after {retry_after}s",
        headers={"Retry-After": str(retry_after)},
        retry_after_s=retry_after,
    )


def tenant_rate_limit(tenant: TenantInfo, default: int) -> int:
    """Returns the tenant's effective submissions per minute: its own override (set with
    ``dfmod tenant set-rate-limit``; 0 is unlimited), else ``default``."""
    return default if tenant.rate_limit_per_minute is None else tenant.rate_limit_per_minute

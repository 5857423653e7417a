"""A tenant's own models and thresholds (``dfmod tenant set-models`` / ``set-thresholds``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.ensemble import latest_ensemble, repository_models, servable_models
from moderation.models import Tenant
from moderation.policy import Thresholds

logger = logging.getLogger(__name__)


def _tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise LookupError(f"no tenant named {name!r}; expected a name from 'dfmod tenant create'")
    return tenant


def set_models(
    *, session: Session, name: str, models: list[str] | None, repository: Path
) -> list[str] | None:
    """Sets the models that score tenant ``name``'s items (None: the global DFMOD_MODELS);
    refuses a name the repository does not serve."""
    if models is not None:
        models = list(dict.fromkeys(m.strip() for m in models if m.strip()))
        available = servable_models(repository)
        unknown = [m for m in models if m not in available]
        if not models or unknown:
            raise ValueError(
                f"unknown models {unknown}; the repository serves {available}"
                if unknown
                else "expected at least one model"
            )
    tenant = _tenant(session, name)
    tenant.models = models
    session.flush()
    logger.info("tenant %s models set to %s", tenant.id, models or "the default")
    return models


def set_thresholds(
    *, session: Session, name: str, pass_below: float | None, flag_at: float | None
) -> tuple[float | None, float | None]:
    """Sets (or with None clears) tenant ``name``'s thresholds on the verdict's p_fake."""
    Thresholds(
        pass_below=0.0 if pass_below is None else pass_below,
        flag_at=1.0 if flag_at is None else flag_at,
    )
    if pass_below is not None and flag_at is not None and pass_below > flag_at:
        raise ValueError("expected pass_below <= flag_at")
    tenant = _tenant(session, name)
    tenant.pass_below, tenant.flag_at = pass_below, flag_at
    session.flush()
    logger.info("tenant %s thresholds set to %s / %s", tenant.id, pass_below, flag_at)
    return pass_below, flag_at


def ensemble_overview(*, session: Session, repository: Path, default_models: str) -> dict[str, Any]:
    """Returns the dashboard's view: the repository's models, the newest ensemble's weights and
    each tenant's models and thresholds."""
    models = repository_models(repository)
    ensemble = latest_ensemble(repository)
    weights: dict[str, float] = {}
    if ensemble is not None:
        weights = dict(ensemble.full()["weights"])
    for row in models:
        row["weight"] = weights.get(row["name"])
    tenants = [
        {
            "name": t.name,
            "models": t.models or None,
            "pass_below": t.pass_below,
            "flag_at": t.flag_at,
        }
        for t in session.scalars(select(Tenant).order_by(Tenant.name))
    ]
    return {
        "models": models,
        "ensemble": None
        if ensemble is None
        else {
            "version": ensemble.version,
            "bias": ensemble.full()["bias"],
            "pass_below": ensemble.pass_below,
            "flag_at": ensemble.flag_at,
            "metrics": ensemble.metrics.get("ensemble", {}),
        },
        "default_models": [m.strip() for m in default_models.split(",") if m.strip()]
        or [m["name"] for m in models],
        "tenants": tenants,
    }

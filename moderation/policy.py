"""The moderation policy: a logit becomes a calibrated p(fake), and p(fake) becomes a decision.

Below ``pass_below`` passes, at or above ``flag_at`` is flagged, between goes to review; the model
version gives temperature and thresholds, a tenant may override the thresholds, and an AI-declaring
C2PA manifest may decide instead (:func:`apply_provenance`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moderation.models import Status

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    """The two cut points of the policy on calibrated p(fake)."""

    pass_below: float
    flag_at: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.pass_below <= self.flag_at <= 1.0:
            raise ValueError(
                "expected 0 <= pass_below <= flag_at <= 1, "
                f"got pass_below={self.pass_below}, flag_at={self.flag_at}"
            )


def calibrate(logit: float, temperature: float = 1.0) -> float:
    """Returns p(fake) = sigmoid(logit / temperature), computed without overflow."""
    if temperature <= 0 or not math.isfinite(temperature):
        raise ValueError(f"expected a positive finite temperature, got {temperature}")
    if not math.isfinite(logit):
        raise ValueError(f"expected a finite logit, got {logit}")
    z = logit / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def decide(p_fake: float, *, pass_below: float, flag_at: float) -> str:
    """Returns ``auto_passed``, ``auto_flagged`` or ``needs_review`` for a calibrated score."""
    Thresholds(pass_below=pass_below, flag_at=flag_at)
    if not 0.0 <= p_fake <= 1.0:
        raise ValueError(f"expected p_fake in [0, 1], got {p_fake}")
    if p_fake < pass_below:
        return Status.AUTO_PASSED
    if p_fake >= flag_at:
        return Status.AUTO_FLAGGED
    return Status.NEEDS_REVIEW


def resolve_thresholds(
    *,
    model_pass_below: float,
    model_flag_at: float,
    tenant_pass_below: float | None = None,
    tenant_flag_at: float | None = None,
) -> Thresholds:
    """Returns the thresholds in force: the tenant's overrides, else the model version's."""
    return Thresholds(
        pass_below=model_pass_below if tenant_pass_below is None else tenant_pass_below,
        flag_at=model_flag_at if tenant_flag_at is None else tenant_flag_at,
    )


REASON_MODEL = "model"
REASON_PROVENANCE_AI = "provenance:ai_generated"
# The score came only from models whose weights are marked as demo weights: never auto-decided.
REASON_DEMO_MODEL = "demo_model_review"
# Which manifests declaring AI generation flag an item: those whose signer is trusted ("valid"),
# any with an intact signature and hard binding ("valid" or "untrusted"), or none (report only).
PROVENANCE_POLICIES: dict[str, tuple[str, ...]] = {
    "trusted": ("valid",),
    "signed": ("valid", "untrusted"),
    "off": (),
}


def apply_provenance(
    decision: str, provenance: Mapping[str, Any] | None, *, policy: str, reason: str = REASON_MODEL
) -> tuple[str, str]:
    """Returns (decision, decision_reason): ``auto_flagged`` for a manifest declaring AI
    generation that ``policy`` accepts, else ``decision`` and ``reason`` as they came.

    It overrides any pass or review (a real-bank match included) and the model's flag; a flag
    with another reason (e.g. a fake-bank match, a human judgement) keeps that reason."""
    if policy not in PROVENANCE_POLICIES:
        raise ValueError(
            f"provenance policy {policy!r}; expected one of {', '.join(PROVENANCE_POLICIES)}"
        )
    if provenance is None or not provenance.get("ai_generated"):
        return decision, reason
    if provenance.get("manifest") not in PROVENANCE_POLICIES[policy]:
        return decision, reason
    if decision == Status.AUTO_FLAGGED and reason != REASON_MODEL:  # flagged for another reason
        return decision, reason
    return Status.AUTO_FLAGGED, REASON_PROVENANCE_AI

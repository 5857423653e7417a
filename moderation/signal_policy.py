"""One decision from several signals: a bank match, provenance, and the model's decision.

A match in a ``fake`` or ``real`` bank decides under the tenant's policy, else the model does; an
accepted AI-declaring manifest then flags (docs/design.md, "Known-media banks").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from moderation.banks import DEFAULT_POLICY, Policy
from moderation.models import Status
from moderation.policy import REASON_MODEL, apply_provenance

logger = logging.getLogger(__name__)

_FAKE_ACTIONS = {"flag": Status.AUTO_FLAGGED, "review": Status.NEEDS_REVIEW}
_REAL_ACTIONS = {"pass": Status.AUTO_PASSED, "review": Status.NEEDS_REVIEW}


def bank_reason(verdict: str) -> str:
    """Returns the ``decision_reason`` of a decision made by a bank match."""
    return f"bank_match:{verdict}"


def decide_with_signals(
    *,
    model_decision: str,
    match_verdict: str | None,
    policy: Policy = DEFAULT_POLICY,
    provenance: Mapping[str, Any] | None = None,
    provenance_policy: str = "off",
) -> tuple[str, str]:
    """Returns (decision, decision_reason) from the model's decision, the bank match's verdict
    (None without a match) and the media's provenance under ``provenance_policy``."""
    decision, reason = _bank_decision(model_decision, match_verdict, policy)
    return apply_provenance(decision, provenance, policy=provenance_policy, reason=reason)


def _bank_decision(
    model_decision: str, match_verdict: str | None, policy: Policy
) -> tuple[str, str]:
    if match_verdict == "fake" and policy.on_fake in _FAKE_ACTIONS:
        return _FAKE_ACTIONS[policy.on_fake], bank_reason("fake")
    if match_verdict == "real" and policy.on_real in _REAL_ACTIONS:
        return _REAL_ACTIONS[policy.on_real], bank_reason("real")
    return model_decision, REASON_MODEL

"""One decision from several signals: a bank match, (later) provenance, and the model's score.

The default policy, which a tenant may change (:class:`moderation.banks.Policy`): a match in a
``fake`` bank is ``auto_flagged``; a match in a ``real`` bank is ``auto_passed`` unless the
media's provenance declares AI generation (the ``provenance_ai_generated`` hook, whose own
decision is made by the provenance policy); otherwise the model's thresholds decide. The
decision's reason names what decided it.
"""

from __future__ import annotations

import logging

from moderation.banks import DEFAULT_POLICY, Policy
from moderation.models import Status

logger = logging.getLogger(__name__)

REASON_MODEL = "model"
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
    provenance_ai_generated: bool = False,
) -> tuple[str, str]:
    """Returns (decision, decision_reason) from the model's decision and the bank match's verdict
    (None without a match)."""
    if match_verdict == "fake" and policy.on_fake in _FAKE_ACTIONS:
        return _FAKE_ACTIONS[policy.on_fake], bank_reason("fake")
    if match_verdict == "real" and not provenance_ai_generated and policy.on_real in _REAL_ACTIONS:
        return _REAL_ACTIONS[policy.on_real], bank_reason("real")
    return model_decision, REASON_MODEL

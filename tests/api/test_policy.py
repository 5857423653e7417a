"""The policy: calibration and the three-way decision, including the edges of each band."""

from __future__ import annotations

import math

import pytest

from moderation import policy
from moderation.models import Status


def test_calibrate_is_sigmoid_of_logit_over_temperature() -> None:
    assert policy.calibrate(0.0) == 0.5
    assert policy.calibrate(2.0, 2.0) == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert policy.calibrate(-2.0, 0.5) == pytest.approx(1 / (1 + math.exp(4.0)))


def test_calibrate_does_not_overflow_on_extreme_logits() -> None:
    assert policy.calibrate(1e6) == 1.0
    assert policy.calibrate(-1e6) == 0.0


@pytest.mark.parametrize(("logit", "temperature"), [(1.0, 0.0), (1.0, -1.0), (math.nan, 1.0)])
def test_calibrate__fail_on_bad_input(logit: float, temperature: float) -> None:
    with pytest.raises(ValueError, match="expected"):
        policy.calibrate(logit, temperature)


@pytest.mark.parametrize(
    ("p_fake", "expected"),
    [
        (0.0, Status.AUTO_PASSED),
        (0.2999, Status.AUTO_PASSED),
        (0.3, Status.NEEDS_REVIEW),
        (0.7999, Status.NEEDS_REVIEW),
        (0.8, Status.AUTO_FLAGGED),
        (1.0, Status.AUTO_FLAGGED),
    ],
)
def test_decide_bands(p_fake: float, expected: str) -> None:
    assert policy.decide(p_fake, pass_below=0.3, flag_at=0.8) == expected


def test_decide_with_equal_thresholds_never_asks_for_review() -> None:
    assert policy.decide(0.49, pass_below=0.5, flag_at=0.5) == Status.AUTO_PASSED
    assert policy.decide(0.5, pass_below=0.5, flag_at=0.5) == Status.AUTO_FLAGGED


@pytest.mark.parametrize(("pass_below", "flag_at"), [(0.8, 0.3), (-0.1, 0.5), (0.2, 1.5)])
def test_decide__fail_on_inconsistent_thresholds(pass_below: float, flag_at: float) -> None:
    with pytest.raises(ValueError, match="pass_below <= flag_at"):
        policy.decide(0.5, pass_below=pass_below, flag_at=flag_at)


def test_resolve_thresholds_prefers_tenant_overrides() -> None:
    model = {"model_pass_below": 0.3, "model_flag_at": 0.8}
    assert policy.resolve_thresholds(**model) == policy.Thresholds(0.3, 0.8)
    assert policy.resolve_thresholds(**model, tenant_flag_at=0.9) == policy.Thresholds(0.3, 0.9)
    assert policy.resolve_thresholds(
        **model, tenant_pass_below=0.1, tenant_flag_at=0.5
    ) == policy.Thresholds(0.1, 0.5)

"""The gate: a challenger may be worse than live by at most the margin, in AUC and in balanced
accuracy; a missing metric (NaN) refuses."""

from __future__ import annotations

import pytest

from training.retrain import gate

LIVE = {"roc_auc": 0.90, "balanced_accuracy": 0.80}


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [
        ({"roc_auc": 0.90, "balanced_accuracy": 0.80}, True),
        ({"roc_auc": 0.881, "balanced_accuracy": 0.781}, True),  # worse, within both margins
        ({"roc_auc": 0.87, "balanced_accuracy": 0.95}, False),  # AUC beyond its margin
        ({"roc_auc": 0.99, "balanced_accuracy": 0.77}, False),  # balanced accuracy beyond
        ({"balanced_accuracy": 0.90}, False),  # one class missing from the holdout: no AUC
    ],
)
def test_gate_margins(challenger: dict[str, float], passed: bool) -> None:
    ok, reasons = gate(challenger, LIVE, margin_auc=0.02, margin_bacc=0.02)
    assert ok is passed
    assert len(reasons) == 2 and all(r.endswith((": ok", ": REFUSED")) for r in reasons)
    assert all(r.endswith(": ok") for r in reasons) is passed


def test_negative_margin_demands_improvement() -> None:
    assert gate(LIVE, LIVE, margin_auc=0.0, margin_bacc=0.0)[0]
    assert not gate(LIVE, LIVE, margin_auc=-0.01, margin_bacc=0.0)[0]

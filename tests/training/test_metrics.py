"""Metrics, calibration error and temperature fitting on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    classification_metrics,
    equal_error_rate,
    expected_calibration_error,
    fit_temperature,
    nll,
    sigmoid,
)


def test_seed_metrics_and_confusion_matrix() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    logits = np.array([-3.0, -1.0, 2.0, -0.5, 1.5, -2.0])
    m = classification_metrics(labels, logits)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["real_accuracy"] == pytest.approx(3 / 4)
    assert m["fake_accuracy"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == {
        "real_as_real": 3,
        "real_as_fake": 1,
        "fake_as_real": 1,
        "fake_as_fake": 1,
    }
    # AUC over 8 real/fake pairs: fake 1.5 outranks 3 reals, fake -2.0 outranks 1 -> 4/8.
    assert m["roc_auc"] == pytest.approx(0.5)
    assert 0 <= m["eer"] <= 1 and 0 <= m["average_precision"] <= 1


def test_perfect_separation() -> None:
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(labels, np.array([-5.0, -4.0, 4.0, 6.0]))
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["eer"] == 0.0
    assert m["average_precision"] == 1.0


def test_equal_error_rate_known_case() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    eer, threshold = equal_error_rate(labels, scores)
    assert eer == pytest.approx(0.25)
    assert 0.3 < threshold <= 0.7


def test_ece_zero_when_calibrated_and_large_when_overconfident() -> None:
    probs = np.array([0.9] * 10 + [0.1] * 10)
    labels = np.array([1] * 9 + [0] + [0] * 9 + [1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    over = np.array([0.99] * 10)
    assert expected_calibration_error(over, np.array([1] * 5 + [0] * 5)) == pytest.approx(0.49)


def test_temperature_recovers_known_scaling() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, 20000)
    labels = (rng.random(20000) < sigmoid(true_logits)).astype(int)
    overconfident = true_logits * 3.0
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.06)
    assert nll(overconfident, labels, t) < nll(overconfident, labels)
    before = expected_calibration_error(sigmoid(overconfident), labels)
    after = expected_calibration_error(sigmoid(overconfident / t), labels)
    assert after < before / 3


def test_temperature_needs_both_classes() -> None:
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1, 1])) == 1.0

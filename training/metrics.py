"""Detector metrics from logits and labels: the seed's four, ranking metrics, calibration.

Kept free of torch so the evaluation report, the training loop and the export's INT8 check all
compute exactly the same numbers. Label 1 is fake; p(fake) = sigmoid(logit / temperature).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

logger = logging.getLogger(__name__)

ECE_BINS = 15


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Returns the logistic function, stable for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Returns the mean binary cross-entropy of temperature-scaled logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Returns ECE: the bin-weighted gap between confidence and accuracy of the predicted class."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(probs) == 0:
        return 0.0
    confidence = np.maximum(probs, 1 - probs)
    correct = (probs >= 0.5).astype(int) == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Returns per-bin mean p(fake), observed fake rate and count, for the reliability diagram."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    index = np.clip((probs * bins).astype(int), 0, bins - 1)
    mean_p, rate, count = [], [], []
    for b in range(bins):
        mask = index == b
        count.append(int(mask.sum()))
        mean_p.append(float(probs[mask].mean()) if mask.any() else None)
        rate.append(float(labels[mask].mean()) if mask.any() else None)
    return {"mean_p_fake": mean_p, "fake_rate": rate, "count": count}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Returns the temperature T > 0 minimising NLL of logits / T (log-space search)."""
    if len(logits) == 0 or len(np.unique(labels)) < 2:
        return 1.0
    grid = np.linspace(np.log(0.05), np.log(20.0), 121)
    best = min(grid, key=lambda g: nll(logits, labels, float(np.exp(g))))
    step = grid[1] - grid[0]
    fine = np.linspace(best - step, best + step, 41)
    return float(np.exp(min(fine, key=lambda g: nll(logits, labels, float(np.exp(g))))))


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Returns (EER, threshold on p(fake)) where false positive and false negative rates meet."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2), float(min(thresholds[i], 1.0))


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, *, temperature: float = 1.0, threshold: float = 0.5
) -> dict[str, Any]:
    """Returns accuracy, per-class accuracy, balanced accuracy, AUC, AP, EER, ECE, confusion."""
    labels = np.asarray(labels).astype(int)
    probs = sigmoid(np.asarray(logits, dtype=np.float64) / temperature)
    predicted = (probs >= threshold).astype(int)
    real, fake = labels == 0, labels == 1
    real_acc = float((predicted[real] == 0).mean()) if real.any() else float("nan")
    fake_acc = float((predicted[fake] == 1).mean()) if fake.any() else float("nan")
    result: dict[str, Any] = {
        "count": len(labels),
        "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        "real_accuracy": real_acc,
        "fake_accuracy": fake_acc,
        "balanced_accuracy": (real_acc + fake_acc) / 2,
        "nll": nll(logits, labels, temperature) if len(labels) else float("nan"),
        "ece": expected_calibration_error(probs, labels),
        "threshold": threshold,
        "confusion_matrix": {
            "real_as_real": int(((predicted == 0) & real).sum()),
            "real_as_fake": int(((predicted == 1) & real).sum()),
            "fake_as_real": int(((predicted == 0) & fake).sum()),
            "fake_as_fake": int(((predicted == 1) & fake).sum()),
        },
    }
    if real.any() and fake.any():
        eer, eer_threshold = equal_error_rate(labels, probs)
        result["roc_auc"] = float(roc_auc_score(labels, probs))
        result["average_precision"] = float(average_precision_score(labels, probs))
        result["eer"], result["eer_threshold"] = eer, eer_threshold
    return result

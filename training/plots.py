"""PNG plots for the evaluation report: ROC, reliability diagram, score histograms, training curves.

Uses matplotlib's Agg backend so reports render on servers without a display.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from training.metrics import reliability_bins, sigmoid

logger = logging.getLogger(__name__)


def plot_roc(path: Path, labels: np.ndarray, probs: np.ndarray) -> None:
    """Writes the ROC curve."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, label="detector")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(
        xlabel="false positive rate (real flagged)",
        ylabel="true positive rate (fake caught)",
        title="ROC",
    )
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_reliability(
    path: Path, labels: np.ndarray, logits: np.ndarray, temperature: float
) -> None:
    """Writes the reliability diagram before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for name, t in (("raw", 1.0), (f"T={temperature:.2f}", temperature)):
        bins = reliability_bins(sigmoid(logits / t), labels)
        pairs = [
            (p, r)
            for p, r in zip(bins["mean_p_fake"], bins["fake_rate"], strict=True)
            if p is not None
        ]
        if pairs:
            xs, ys = zip(*pairs, strict=True)
            ax.plot(xs, ys, "o-", label=name)
    ax.set(
        xlabel="predicted p(fake)",
        ylabel="observed fake rate",
        title="Reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_histograms(path: Path, labels: np.ndarray, probs: np.ndarray) -> None:
    """Writes histograms of p(fake) per true class."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    edges = np.linspace(0, 1, 26)
    for label, name in ((0, "real"), (1, "fake")):
        ax.hist(probs[labels == label], bins=list(edges), alpha=0.6, label=name)
    ax.set(xlabel="calibrated p(fake)", ylabel="images", title="Scores per class")
    ax.legend()
    _save(fig, path)


def plot_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Writes loss and validation metrics per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    epochs = [h["epoch"] for h in history]
    for key in ("train_loss", "val_loss"):
        left.plot(epochs, [h.get(key) for h in history], "o-", label=key)
    for key in ("val_accuracy", "val_balanced_accuracy", "val_auc"):
        right.plot(epochs, [h.get(key) for h in history], "o-", label=key)
    left.set(xlabel="epoch", title="focal loss")
    right.set(xlabel="epoch", title="validation", ylim=(0, 1.02))
    left.legend()
    right.legend(loc="lower right")
    _save(fig, path)


def write_plots(
    out: Path,
    *,
    labels: np.ndarray,
    logits: np.ndarray,
    temperature: float,
    history: list[dict[str, Any]],
) -> list[Path]:
    """Writes every report plot into ``out`` and returns their paths."""
    probs = sigmoid(logits / temperature)
    paths = [out / "roc.png", out / "reliability.png", out / "score_histograms.png"]
    plot_roc(paths[0], labels, probs)
    plot_reliability(paths[1], labels, logits, temperature)
    plot_histograms(paths[2], labels, probs)
    if history:
        paths.append(out / "training_curves.png")
        plot_history(paths[-1], history)
    return paths


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

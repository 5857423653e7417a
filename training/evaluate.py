"""Evaluate a checkpoint: metrics, temperature scaling and a report folder with JSON and plots.

The temperature is fitted on the validation split and the report is computed on the test split
(validation when there is none), using the evaluation transform, which is the worker's own
preprocessing. ``report.json`` is what ``dfmod export`` copies into a version's metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.checkpoint import model_from_checkpoint
from training.data import ImageDataset, balance_summary, discover, scan, stratified_split
from training.metrics import (
    classification_metrics,
    fit_temperature,
    reliability_bins,
    sigmoid,
)
from training.train import predict

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.json"


def load_eval_split(args: dict[str, Any], data: Path | None, split: str) -> ImageDataset:
    """Returns the deterministic split a checkpoint was trained with (or of another data set)."""
    source = Path(data or args["data"])
    splits = stratified_split(
        discover(source),
        val_fraction=float(args.get("val_fraction", 0.15)),
        test_fraction=float(args.get("test_fraction", 0.15)),
        seed=int(args.get("seed", 0)),
    )
    logger.info("evaluation data %s:\n%s", source, balance_summary(splits))
    return ImageDataset(scan(splits[split]))


def score(
    model: torch.nn.Module, dataset: ImageDataset, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (labels, logits) for a dataset on CPU."""
    loader = DataLoader(dataset, batch_size=batch_size)
    return dataset.labels(), predict(model, loader, torch.device("cpu"))  # type: ignore[arg-type]


def build_report(
    *, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Returns the report dict: temperature from validation, metrics on test before/after it."""
    temperature = fit_temperature(val[1], val[0])
    labels, logits = test
    before = classification_metrics(labels, logits)
    after = classification_metrics(labels, logits, temperature=temperature)
    return {
        "temperature": temperature,
        "metrics": before,
        "calibrated": {"ece": after["ece"], "nll": after["nll"]},
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "validation": classification_metrics(val[0], val[1]),
        "reliability_before": reliability_bins(sigmoid(logits), labels),
        "reliability_after": reliability_bins(sigmoid(logits / temperature), labels),
    }


def evaluate_checkpoint(
    *, checkpoint: Path, out: Path, data: Path | None = None, threads: int = 2
) -> dict[str, Any]:
    """Evaluates a checkpoint and writes ``report.json`` and PNG plots into ``out``."""
    torch.set_num_threads(threads)
    model, state = model_from_checkpoint(checkpoint)
    args = state.get("args", {})
    val = score(model, load_eval_split(args, data, "val"))
    test_set = load_eval_split(args, data, "test")
    split_name = "test" if len(test_set) else "val"
    test = score(model, test_set) if len(test_set) else val
    report = build_report(val=val, test=test)
    report.update(
        checkpoint=str(checkpoint),
        data=str(data or args.get("data")),
        report_split=split_name,
        epoch=state.get("epoch"),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2, default=_json) + "\n")
    np.savez(out / "scores.npz", labels=test[0], logits=test[1])
    from training.plots import write_plots

    history = _read_history(Path(checkpoint).parent / "metrics.jsonl") or state.get("history", [])
    write_plots(
        out, labels=test[0], logits=test[1], temperature=report["temperature"], history=history
    )
    logger.info("report written to %s", out)
    return report


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def summary_line(report: dict[str, Any]) -> str:
    """Returns a one-line human summary of a report."""
    m = report["metrics"]
    return (
        f"accuracy {m['accuracy']:.3f}, real {m['real_accuracy']:.3f}, fake "
        f"{m['fake_accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f}, AUC "
        f"{m.get('roc_auc', float('nan')):.3f}, EER {m.get('eer', float('nan')):.3f}, ECE "
        f"{report['ece_before']:.3f} → {report['ece_after']:.3f} (T={report['temperature']:.2f})"
    )

"""Evaluate a checkpoint: metrics, temperature scaling and a report folder with JSON and plots.

Temperature fitted on validation, report on test, with the worker's preprocessing; with a
genuine-photo set also thresholds (:mod:`training.thresholds`). ``dfmod export`` copies
``report.json`` into the version's metadata.
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
from training.data import (
    DataError,
    ImageDataset,
    balance_summary,
    discover,
    read_manifest,
    scan,
    stratified_split,
)
from training.metrics import (
    classification_metrics,
    fit_temperature,
    reliability_bins,
    sigmoid,
)
from training.thresholds import choose_thresholds
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


def genuine_thresholds(
    model: torch.nn.Module,
    genuine: Path,
    *,
    temperature: float,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    target_fpr: float,
    target_recall: float,
) -> dict[str, Any]:
    """Chooses thresholds on the genuine set's ``val`` photos and the data's validation fakes,
    and reports their rates on the genuine ``test`` photos and the test fakes."""
    if not (genuine.is_file() and genuine.suffix.lower() == ".csv"):
        raise DataError(f"{genuine}: expected a genuine-photo manifest.csv (dfmod genuine-photos)")
    samples = [s for s in read_manifest(genuine) if s.label == 0]
    by_split = {name: [s for s in samples if s.split == name] for name in ("val", "test")}
    if not by_split["val"] or not by_split["test"]:
        raise DataError(
            f"{genuine}: expected genuine photos in both the 'val' and 'test' splits "
            "(dfmod genuine-photos writes such a manifest)"
        )

    def p_fake(logits: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(logits) / temperature)

    real = {
        name: p_fake(score(model, ImageDataset(scan(items)))[1]) for name, items in by_split.items()
    }
    fakes = {
        name: p_fake(logits[labels == 1])
        for name, (labels, logits) in (("val", val), ("test", test))
    }
    result = choose_thresholds(
        choose=(real["val"], fakes["val"]),
        report=(real["test"], fakes["test"]),
        target_fpr=target_fpr,
        target_recall=target_recall,
    )
    result["genuine"] = str(genuine)
    return result


def evaluate_checkpoint(
    *,
    checkpoint: Path,
    out: Path,
    data: Path | None = None,
    threads: int = 2,
    genuine: Path | None = None,
    target_fpr: float = 0.01,
    target_recall: float = 0.95,
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
    if genuine is not None:
        report["thresholds"] = genuine_thresholds(
            model,
            genuine,
            temperature=report["temperature"],
            val=val,
            test=test,
            target_fpr=target_fpr,
            target_recall=target_recall,
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

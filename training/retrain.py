"""The retraining loop (``dfmod retrain``): labels + base data → train → gate → export → deploy.

A challenger trained on the merged labels is scored beside the live model on a fixed holdout and
deployed as N+1 only if it passes the gate; ``RUN/gate.json`` holds the verdict
(docs/design.md, "Labels, retraining, deploy and rollback").
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from moderation import contract
from moderation.version_folders import version_numbers
from training.data import DataError, discover, scan
from training.deploy import ServingTarget, deploy
from training.export import CHECKPOINT_FILENAME, onnx_logits, onnx_session
from training.metrics import classification_metrics

logger = logging.getLogger(__name__)

GATED = ("roc_auc", "balanced_accuracy")


@dataclass(frozen=True)
class RetrainRequest:
    """What ``dfmod retrain`` was asked to do."""

    holdout: Path
    out: Path
    labels: Path | None = None
    base: Path | None = None
    init: str = "live"  # "live", "scratch" or a checkpoint path
    epochs: int = 1
    batch_size: int = 8
    lr: float = 1e-3
    freeze_blocks: int | None = 14
    max_train_images: int | None = None
    threads: int = 2
    seed: int = 0
    margin_auc: float = 0.02
    margin_bacc: float = 0.02
    deployed_by: str = "dfmod retrain"
    deploy: bool = True
    genuine: Path | None = None  # choose thresholds on it; None: keep the live version's
    target_fpr: float = 0.01
    target_recall: float = 0.95


@dataclass
class RetrainResult:
    """The gate's verdict, both models' holdout metrics and the deployed version (if any)."""

    passed: bool
    reasons: list[str]
    live_version: int
    challenger: dict[str, Any]
    live: dict[str, Any]
    deployed_version: int | None = None
    run: dict[str, Any] = field(default_factory=dict)


def training_manifest(*, out: Path, sources: list[Path], holdout: Path) -> tuple[Path, int]:
    """Writes ``out/train.csv`` (absolute paths) from every source minus the holdout images."""
    held = {s.path.resolve() for s in discover(holdout)}
    rows: list[tuple[str, int]] = []
    for source in sources:
        rows.extend(
            (str(s.path.resolve()), s.label)
            for s in discover(source)
            if s.path.resolve() not in held
        )
    if not rows:
        raise DataError("no training images: pass --labels and/or --base")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "train.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return manifest, len(rows)


def init_checkpoint(init: str, target: ServingTarget, live: int) -> str | None:
    """Returns the checkpoint to start from: live version's, an explicit path, or None."""
    if init == "scratch":
        return None
    if init != "live":
        return str(Path(init))
    path = target.model_dir / str(live) / CHECKPOINT_FILENAME
    if path.is_file():
        return str(path)
    logger.warning("live version %d keeps no %s; training from scratch", live, path.name)
    return None


def holdout_metrics(model_path: Path, holdout: Path) -> dict[str, Any]:
    """Returns metrics of an ONNX model on the holdout (serving preprocessing, threshold 0.5)."""
    scanned = scan(discover(holdout))
    if scanned.arrays is None:
        raise DataError(f"the holdout {holdout} has no readable images")
    labels = np.array([s.label for s in scanned.samples])
    logits = onnx_logits(onnx_session(model_path), scanned.arrays)
    metrics = classification_metrics(labels, logits)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def gate(
    challenger: dict[str, Any], live: dict[str, Any], *, margin_auc: float, margin_bacc: float
) -> tuple[bool, list[str]]:
    """Returns whether the challenger may replace live, with one reason per gated metric."""
    reasons, passed = [], True
    for key, margin in zip(GATED, (margin_auc, margin_bacc), strict=True):
        new, old = float(challenger.get(key, float("nan"))), float(live.get(key, float("nan")))
        ok = bool(new >= old - margin)
        passed = passed and ok
        verdict = "ok" if ok else "REFUSED"
        reasons.append(
            f"{key}: challenger {new:.4f} vs live {old:.4f} - margin {margin}: {verdict}"
        )
    return passed, reasons


def train_challenger(req: RetrainRequest, manifest: Path, init_from: str | None) -> Path:
    """Trains on the manifest and returns the best checkpoint (the last one if none improved)."""
    from training.train import TrainConfig, run

    config = TrainConfig(
        data=str(manifest),
        out=str(req.out / "train"),
        epochs=req.epochs,
        batch_size=req.batch_size,
        lr=req.lr,
        val_fraction=0.2,
        test_fraction=0.0,
        seed=req.seed,
        pretrained=False,
        freeze_blocks=req.freeze_blocks,
        init_from=init_from,
        threads=req.threads,
        max_train_images=req.max_train_images,
    )
    run_dir = run(config)
    best = run_dir / "best.pt"
    return best if best.is_file() else run_dir / "last.pt"


def export_challenger(req: RetrainRequest, checkpoint: Path, live_dir: Path) -> Path:
    """Calibrates (temperature on the validation split), exports into ``RUN/candidate``.

    With a genuine-photo set the candidate's thresholds are chosen by error rates on it
    (:mod:`training.thresholds`); without one it keeps the live version's.
    """
    from training.evaluate import REPORT_FILENAME, evaluate_checkpoint
    from training.release import ExportRequest, export

    evaluate_checkpoint(
        checkpoint=checkpoint,
        out=req.out / "report",
        threads=req.threads,
        genuine=req.genuine,
        target_fpr=req.target_fpr,
        target_recall=req.target_recall,
    )
    live_meta = contract.ModelMetadata.read(live_dir)
    chosen = req.genuine is not None
    folder, _ = export(
        ExportRequest(
            checkpoint=checkpoint,
            report=req.out / "report" / REPORT_FILENAME,
            repository=req.out / "candidate",
            version=1,
            artifacts=req.out / "artifacts",
            trained_on=f"retrain: labels {req.labels}, base {req.base}",
            torchscript=False,
            int8=False,
            pass_below=None if chosen else live_meta.pass_below,
            flag_at=None if chosen else live_meta.flag_at,
            overwrite=True,
        )
    )
    return folder


def retrain(*, session: Session, req: RetrainRequest, target: ServingTarget) -> RetrainResult:
    """Runs the whole loop; deploys only a challenger that passes the gate."""
    versions = version_numbers(target.model_dir)
    if not versions:
        raise DataError(f"{target.model_dir} has no version to compare against")
    live = versions[-1]  # version_policy latest 1: the highest folder is the one serving
    sources = [p for p in (req.labels, req.base) if p is not None]
    manifest, count = training_manifest(out=req.out, sources=sources, holdout=req.holdout)
    init_from = init_checkpoint(req.init, target, live)
    logger.info("retraining on %d images from %s (init: %s)", count, sources, init_from)
    candidate = export_challenger(
        req, train_challenger(req, manifest, init_from), target.model_dir / str(live)
    )
    challenger = holdout_metrics(candidate / contract.ONNX_FILENAME, req.holdout)
    live_metrics = holdout_metrics(
        target.model_dir / str(live) / contract.ONNX_FILENAME, req.holdout
    )
    passed, reasons = gate(
        challenger, live_metrics, margin_auc=req.margin_auc, margin_bacc=req.margin_bacc
    )
    run_info = {"train_images": count, "init_from": init_from, "request": _jsonable(req)}
    result = RetrainResult(passed, reasons, live, challenger, live_metrics, run=run_info)
    if passed and req.deploy:
        row = deploy(
            session=session,
            source=candidate,
            target=target,
            deployed_by=req.deployed_by,
            metrics={"holdout": challenger, "live_holdout": live_metrics, "replaces": live},
            extra={"retrain": {"replaces": live, "holdout": str(req.holdout), **run_info}},
        )
        result.deployed_version = int(row.version)
    (req.out / "gate.json").write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    logger.info("gate %s: %s", "passed" if passed else "refused", "; ".join(reasons))
    return result


def _jsonable(req: RetrainRequest) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(req).items()}

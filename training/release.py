"""Turn a checkpoint and its evaluation report into a numbered model version (``dfmod export``).

Writes ONNX, metadata and a slim checkpoint into ``model_repository/deepfake_detector/<N>/`` and
the side artefacts (TorchScript, INT8 ONNX, a summary) elsewhere, each checked against PyTorch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moderation import contract
from moderation.version_folders import next_version
from training.checkpoint import model_from_checkpoint, slim_checkpoint
from training.data import DataError, discover, scan, stratified_split
from training.demo_data import make_fake, make_real
from training.export import (
    INT8_FILENAME,
    check_parity,
    code_revision,
    export_torchscript,
    onnx_logits,
    onnx_session,
    quantize_int8,
    torchscript_runner,
    utc_now,
    write_version,
)
from training.metrics import classification_metrics
from training.model import DeepfakeDetector
from training.residual import ARCHITECTURE

logger = logging.getLogger(__name__)

METRIC_KEYS = (
    "accuracy",
    "real_accuracy",
    "fake_accuracy",
    "balanced_accuracy",
    "roc_auc",
    "average_precision",
    "eer",
    "count",
)


@dataclass(frozen=True)
class ExportRequest:
    """What ``dfmod export`` was asked to do."""

    checkpoint: Path
    repository: Path
    report: Path | None = None
    data: Path | None = None
    version: int | None = None
    trained_on: str | None = None
    artifacts: Path = Path("runs/export")
    torchscript: bool = True
    int8: bool = True
    pass_below: float | None = None  # None: the report's chosen thresholds, else 0.3
    flag_at: float | None = None  # None: the report's chosen thresholds, else 0.8
    overwrite: bool = False
    model_name: str | None = None  # None: by the checkpoint's architecture
    demo_weights: bool = False  # metadata extra.demo_weights: never auto-decides alone


DEFAULT_PASS_BELOW = 0.3
DEFAULT_FLAG_AT = 0.8


def thresholds_for(req: ExportRequest, report: dict[str, Any] | None) -> tuple[float, float]:
    """Returns (pass_below, flag_at): given ones win, then the report's chosen, then defaults."""
    chosen = (report or {}).get("thresholds") or {}
    pass_below = req.pass_below if req.pass_below is not None else chosen.get("pass_below")
    flag_at = req.flag_at if req.flag_at is not None else chosen.get("flag_at")
    pass_below = DEFAULT_PASS_BELOW if pass_below is None else float(pass_below)
    flag_at = DEFAULT_FLAG_AT if flag_at is None else float(flag_at)
    if not 0 <= pass_below <= flag_at <= 1:
        raise ValueError(f"expected 0 <= pass_below ({pass_below}) <= flag_at ({flag_at}) <= 1")
    return pass_below, flag_at


def eval_images(
    args: dict[str, Any], data: Path | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns {split: (arrays, labels)} for val and test of the checkpoint's data, if present."""
    source = Path(data or args.get("data") or "")
    try:
        splits = stratified_split(
            discover(source),
            val_fraction=float(args.get("val_fraction", 0.15)),
            test_fraction=float(args.get("test_fraction", 0.15)),
            seed=int(args.get("seed", 0)),
        )
    except (DataError, OSError) as exc:
        logger.warning("no evaluation data for export checks (%s); using generated images", exc)
        return {}
    result = {}
    for name in ("val", "test"):
        scanned = scan(splits[name])
        if scanned.arrays is not None:
            result[name] = (scanned.arrays, np.array([s.label for s in scanned.samples]))
    return result


def generated_images(count: int = 8) -> np.ndarray:
    """Returns demo images (half real, half fake) through the serving preprocessing."""
    from moderation.preprocess import load_image

    rng = np.random.default_rng(1234)
    return np.stack(
        [load_image((make_real if i % 2 else make_fake)(rng, 240)) for i in range(count)]
    )


def _int8_report(
    fp32: Path, out: Path, calib: np.ndarray, test: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    quantize_int8(fp32, out, calib)
    report: dict[str, Any] = {
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": out.stat().st_size,
        "file": str(out),
    }
    report["size_ratio"] = report["int8_bytes"] / report["fp32_bytes"]
    if test is not None:
        images, labels = test
        a = onnx_logits(onnx_session(fp32), images)
        b = onnx_logits(onnx_session(out), images)
        ma, mb = classification_metrics(labels, a), classification_metrics(labels, b)
        report["max_abs_logit_delta"] = float(np.max(np.abs(a - b)))
        report["metric_deltas"] = {
            k: mb[k] - ma[k] for k in METRIC_KEYS[:-1] if k in ma and k in mb
        }
        report["int8_metrics"] = {k: mb[k] for k in METRIC_KEYS if k in mb}
    logger.info("INT8: %s", json.dumps({k: v for k, v in report.items() if k != "int8_metrics"}))
    return report


def _metadata(
    req: ExportRequest, state: dict[str, Any], report: dict[str, Any] | None
) -> contract.ModelMetadata:
    args = state.get("args", {})
    residual = args.get("arch") == "residual"
    init = "ImageNet MobileNetV2" if args.get("pretrained") else "random initialisation"
    trained_on = req.trained_on or f"{args.get('data')} (backbone: {init})"
    metrics: dict[str, Any] = {}
    temperature = 1.0
    if report is not None:
        temperature = float(report["temperature"])
        metrics = {k: report["metrics"][k] for k in METRIC_KEYS if k in report["metrics"]}
        metrics.update(
            split=report.get("report_split"),
            ece_before=report["ece_before"],
            ece_after=report["ece_after"],
            confusion_matrix=report["metrics"]["confusion_matrix"],
        )
    training = {
        k: args.get(k)
        for k in (
            "epochs",
            "batch_size",
            "lr",
            "pretrained",
            "freeze_blocks",
            "seed",
            "alpha",
            "gamma",
            "init_from",
            "arch",
        )
    }
    pass_below, flag_at = thresholds_for(req, report)
    extra: dict[str, Any] = {}
    if report is not None and report.get("thresholds"):
        extra["thresholds"] = {
            **report["thresholds"],
            "used": {"pass_below": pass_below, "flag_at": flag_at},
        }
    return contract.ModelMetadata(
        version=0,
        temperature=temperature,
        pass_below=pass_below,
        flag_at=flag_at,
        trained_on=trained_on,
        metrics=metrics,
        code_revision=code_revision(),
        created_at=utc_now(),
        extra={
            "architecture": RESIDUAL_ARCHITECTURE if residual else SEED_ARCHITECTURE,
            **({"demo_weights": True} if req.demo_weights else {}),
            "training": {**training, "epochs_run": state.get("epoch")},
            **extra,
        },
    )


SEED_ARCHITECTURE = "MobileNetV2 features + channel attention + MLP head (seed)"
RESIDUAL_ARCHITECTURE = ARCHITECTURE
RESIDUAL_MODEL_NAME = "residual_detector"


def _default_name(state: dict[str, Any]) -> str:
    arch = state.get("args", {}).get("arch")
    return RESIDUAL_MODEL_NAME if arch == "residual" else contract.MODEL_NAME


def export(req: ExportRequest) -> tuple[Path, dict[str, Any]]:
    """Exports a checkpoint as a new model version; returns its folder and a summary."""
    model, state = model_from_checkpoint(req.checkpoint)
    report = json.loads(req.report.read_text()) if req.report else None
    data = eval_images(state.get("args", {}), req.data)
    real = data["test"][0][:16] if "test" in data and len(data["test"][0]) else generated_images()
    model_dir = req.repository / (req.model_name or _default_name(state))
    version = req.version or next_version(model_dir)
    metadata = _metadata(req, state, report)
    summary: dict[str, Any] = {"version": version}
    artifacts = req.artifacts / f"v{version}"
    artifacts.mkdir(parents=True, exist_ok=True)
    if req.torchscript:
        summary["torchscript"] = _torchscript(model, artifacts, real)
    target, parity = write_version(
        model=model,
        model_dir=model_dir,
        version=version,
        metadata=metadata,
        checkpoint=slim_checkpoint(state),
        real_images=real,
        overwrite=req.overwrite,
    )
    summary["onnx_parity"] = parity.as_dict()
    if req.int8:
        calib = data["val"][0][:64] if "val" in data else generated_images(16)
        int8 = _int8_report(
            target / contract.ONNX_FILENAME, artifacts / INT8_FILENAME, calib, data.get("test")
        )
        summary["int8"] = int8
        meta = contract.ModelMetadata.read(target)
        extra = {**meta.extra, "int8": {k: v for k, v in int8.items() if k != "file"}}
        contract.ModelMetadata(**{**meta.__dict__, "extra": extra}).write(target)
    (artifacts / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return target, summary


def _torchscript(model: DeepfakeDetector, artifacts: Path, real: np.ndarray) -> dict[str, Any]:
    path = export_torchscript(model, artifacts / contract.TORCHSCRIPT_FILENAME)
    parity = check_parity(model, torchscript_runner(path), real)
    return {"file": str(path), "parity": parity.as_dict()}

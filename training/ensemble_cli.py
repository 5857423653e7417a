"""``dfmod ensemble fit``: score a holdout with every model's served graph, fit the combination.

Each ``model.onnx`` runs on onnxruntime with the worker's preprocessing; weights come from a seeded
fitting half of the holdout, the reported metrics from the other half.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from moderation import contract
from moderation.ensemble import (
    Ensemble,
    combined_p,
    ensemble_versions,
    fit_combinations,
    model_info,
    servable_models,
    subset_key,
    write_ensemble,
)
from moderation.preprocess import ImageLimits, MediaRejected, decode_image, image_to_input
from moderation.settings import load_settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def discover_holdout(source: Path) -> list[tuple[Path, int]]:
    """Returns (path, label) from real/ and fake/ folders or a CSV with path,label columns."""
    if source.is_file():
        rows = []
        with open(source, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                label = LABELS.get(str(row.get("label", "")).strip().lower())
                if label is None or not row.get("path"):
                    raise click.ClickException(f"{source.name} line {line}: expected path,label")
                rows.append((source.parent / row["path"], label))
        return rows
    rows = [
        (path, label)
        for label, folder in ((0, "real"), (1, "fake"))
        for path in sorted((source / folder).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not rows:
        raise click.ClickException(f"{source} has no images under real/ and fake/")
    return rows


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Returns the ROC AUC (Mann-Whitney, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _metrics(labels: np.ndarray, p: np.ndarray) -> dict[str, float]:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    predicted = p >= 0.5
    return {
        "roc_auc": roc_auc(labels, p),
        "log_loss": float(-np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q))),
        "brier": float(np.mean((p - labels) ** 2)),
        "balanced_accuracy": float(
            (predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2
        ),
        "count": len(labels),
    }


def score_holdout(
    repository: Path, names: list[str], paths: list[Path]
) -> tuple[dict[str, np.ndarray], list[int], dict[str, int]]:
    """Returns each model's calibrated logits on the readable images, their indexes, versions."""
    import onnxruntime as ort

    infos = {name: model_info(repository, name) for name in names}
    inputs: dict[tuple[int, str], list[np.ndarray]] = {}
    kept: list[int] = []
    largest = max(info.size for info in infos.values())
    limits = ImageLimits(size=largest)
    for index, path in enumerate(paths):
        try:
            image, fmt = decode_image(path.read_bytes(), limits)
            arrays = {
                key: image_to_input(image, size=key[0], resize=key[1], what=fmt)
                for key in {(i.size, i.resize) for i in infos.values()}
            }
        except (OSError, MediaRejected):
            continue
        kept.append(index)
        for key, array in arrays.items():
            inputs.setdefault(key, []).append(array)
    z: dict[str, np.ndarray] = {}
    for name, info in infos.items():
        model = repository / name / str(info.version) / contract.ONNX_FILENAME
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        images = np.stack(inputs[(info.size, info.resize)])
        logits = np.concatenate(
            [
                session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i : i + 32]})[0]
                for i in range(0, len(images), 32)
            ]
        ).reshape(-1)
        z[name] = logits.astype(np.float64) / info.temperature
    return z, kept, {name: info.version for name, info in infos.items()}


@click.group("ensemble")
def ensemble_group() -> None:
    """Fit and show the calibrated ensemble of the repository's models."""


@ensemble_group.command("fit")
@click.option(
    "--holdout",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="real/ + fake/ folders or a path,label CSV that no model trained on.",
)
@click.option("--models", default=None, help="Comma-separated models (default: every one).")
@click.option("--repository", type=click.Path(path_type=Path), default=None)
@click.option("--check-fraction", type=click.FloatRange(0.1, 0.9), default=0.5, show_default=True)
@click.option(
    "--genuine",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Genuine-photo manifest.csv (dfmod genuine-photos): choose the ensemble's flag_at for "
    "--target-fpr and pass_below for --target-recall (needs the [train] extra).",
)
@click.option("--target-fpr", type=click.FloatRange(0, 1, max_open=True), default=0.01)
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95)
@click.option("--pass-below", type=click.FloatRange(0, 1), default=None, help="Default 0.3.")
@click.option("--flag-at", type=click.FloatRange(0, 1), default=None, help="Default 0.8.")
@click.option("--seed", type=int, default=0, show_default=True)
def fit_command(
    holdout: Path,
    models: str | None,
    repository: Path | None,
    check_fraction: float,
    genuine: Path | None,
    target_fpr: float,
    target_recall: float,
    pass_below: float | None,
    flag_at: float | None,
    seed: int,
) -> None:
    """Fit p_fake = sigmoid(b + sum w_i z_i) on a holdout; write the next ensemble version.

    z_i is model i's logit divided by its version's temperature. One combination is fitted per
    subset of the models, so a verdict from the models that answered stays calibrated.

    Example: dfmod ensemble fit --holdout data/holdout
    """
    if genuine is not None and (pass_below is not None or flag_at is not None):
        raise click.UsageError("--genuine chooses the thresholds; leave out --pass-below/--flag-at")
    pass_below = 0.3 if pass_below is None else pass_below
    flag_at = 0.8 if flag_at is None else flag_at
    if pass_below > flag_at:
        raise click.UsageError("expected --pass-below <= --flag-at")
    repo = repository or load_settings().model_repository
    available = servable_models(repo)
    names = [n.strip() for n in models.split(",") if n.strip()] if models else available
    unknown = sorted(set(names) - set(available))
    if unknown or not names:
        raise click.ClickException(
            f"unknown models {unknown}; the repository serves {available}"
            if unknown
            else "no models to combine"
        )
    rows = discover_holdout(holdout)
    z, kept, versions = score_holdout(repo, names, [path for path, _ in rows])
    labels = np.array([rows[i][1] for i in kept], dtype=np.int64)
    if len(set(labels.tolist())) < 2 or len(labels) < 20:
        raise click.ClickException("the holdout needs at least 20 readable images of both classes")
    order = np.random.default_rng(seed).permutation(len(labels))
    check_count = round(len(labels) * check_fraction)
    check, fit = order[:check_count], order[check_count:]
    combinations = fit_combinations({n: z[n][fit] for n in names}, labels[fit])
    metrics: dict[str, Any] = {
        name: _metrics(labels[check], 1 / (1 + np.exp(-z[name][check]))) for name in names
    }
    full = combinations[subset_key(names)]
    metrics["ensemble"] = _metrics(labels[check], combined_p(full, {n: z[n][check] for n in names}))
    if genuine is not None:
        fakes = labels == 1
        chosen = _genuine_thresholds(
            repo,
            names,
            full,
            genuine,
            fakes=(
                {n: z[n][fit][fakes[fit]] for n in names},
                {n: z[n][check][fakes[check]] for n in names},
            ),
            target_fpr=target_fpr,
            target_recall=target_recall,
        )
        pass_below, flag_at = chosen["pass_below"], chosen["flag_at"]
        metrics["thresholds"] = chosen
    version = max(ensemble_versions(repo), default=0) + 1
    ensemble = Ensemble(
        version=version,
        members=sorted(names),
        combinations=combinations,
        pass_below=pass_below,
        flag_at=flag_at,
        created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        fitted_on={
            "holdout": holdout.name,
            "images": len(labels),
            "fit": len(fit),
            "check": len(check),
            "seed": seed,
            "model_versions": versions,
        },
        metrics={"split": "check", **metrics},
    )
    path = write_ensemble(repo, ensemble)
    click.echo(f"wrote ensemble version {version} to {path}")
    click.echo(json.dumps({"weights": full, "metrics": metrics}, indent=2))
    click.echo(f"thresholds: pass_below {pass_below:.4f}, flag_at {flag_at:.4f}")


def _genuine_thresholds(
    repo: Path,
    names: list[str],
    full: dict[str, Any],
    genuine: Path,
    *,
    fakes: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    target_fpr: float,
    target_recall: float,
) -> dict[str, Any]:
    """Chooses the ensemble's thresholds on the genuine photos' 'val' split and the holdout's
    fitting fakes; reports their rates on the 'test' photos and the checking fakes."""
    try:
        from training.thresholds import choose_thresholds
    except ImportError as exc:
        raise click.ClickException(
            "--genuine needs the [train] extra (scipy): pip install -e '.[train]'"
        ) from exc
    with open(genuine, newline="") as handle:
        rows = list(csv.DictReader(handle))
    real: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        paths = [genuine.parent / r["path"] for r in rows if r.get("split") == split]
        if not paths:
            raise click.ClickException(
                f"{genuine.name}: expected genuine photos in the 'val' and 'test' splits "
                "(dfmod genuine-photos writes such a manifest)"
            )
        z, _kept, _versions = score_holdout(repo, names, paths)
        real[split] = combined_p(full, z)
    result = choose_thresholds(
        choose=(real["val"], combined_p(full, fakes[0])),
        report=(real["test"], combined_p(full, fakes[1])),
        target_fpr=target_fpr,
        target_recall=target_recall,
    )
    result["genuine"] = genuine.name
    return result

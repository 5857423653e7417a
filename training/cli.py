"""``dfmod demo-data``, ``genuine-photos``, ``train``, ``evaluate`` and ``export``.

Thin click wrappers: each command parses options into the plain functions of the training package
and turns the package's errors into clear one-line messages.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


@click.command("demo-data")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="Folder to write real/, fake/ and manifest.csv into.",
)
@click.option("--per-class", type=int, default=1000, show_default=True, help="Images per class.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed; the same seed always gives the same images.",
)
@click.option(
    "--size",
    type=int,
    default=256,
    show_default=True,
    help="Approximate image side in pixels (varies ±12%).",
)
def demo_data(out: Path, per_class: int, seed: int, size: int) -> None:
    """Generate a deterministic synthetic real/fake image set.

    Real images are drawn face-like scenes compressed once; fakes carry face-swap traces
    (resampled, colour-shifted, differently sharp face blended in, double JPEG). For demos and
    tests only: a detector trained on it says nothing about real deepfakes.

    Example: dfmod demo-data --out data/demo --per-class 1000
    """
    from training.demo_data import generate

    _setup_logging()
    counts = generate(out, per_class=per_class, seed=seed, size=size)
    click.echo(f"wrote {counts['real']} real and {counts['fake']} fake images to {out}")


@click.command("genuine-photos")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("data/genuine"),
    show_default=True,
    help="Folder to write real/, manifest.csv and sources.csv into.",
)
@click.option("--crops", type=click.IntRange(1, 64), default=16, show_default=True)
@click.option("--size", type=click.IntRange(64, 4096), default=512, show_default=True)
@click.option(
    "--eval-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="Share of photographs whose crops report rates ('test'); the rest choose thresholds.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def genuine_photos(out: Path, crops: int, size: int, eval_fraction: float, seed: int) -> None:
    """Build a genuine-photo set from photographs installed Debian packages ship.

    Copies the camera photographs of the packages in training/genuine.py's catalogue (install
    them with apt-get first), writes the whole photo and random crops of it, a manifest for
    dfmod evaluate --genuine, and sources.csv with each photograph's package, version, author
    and licence. All crops of one photograph share a split.

    Example: sudo apt-get install mate-backgrounds plasma-workspace-wallpapers &&
    dfmod genuine-photos --out data/genuine
    """
    from training.genuine import build, find_photos

    _setup_logging()
    try:
        manifest = build(
            out,
            photos=find_photos(),
            crops_per_photo=crops,
            size=size,
            eval_fraction=eval_fraction,
            seed=seed,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {manifest} (sources: {manifest.parent / 'sources.csv'})")


@click.command("train")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A folder with real/ and fake/ subfolders, or a CSV manifest path,label[,split].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/train"),
    show_default=True,
    help="Run folder: config.json, metrics.jsonl, last.pt, best.pt.",
)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--accumulate",
    type=int,
    default=1,
    show_default=True,
    help="Gradient accumulation steps (effective batch = batch size × this).",
)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option(
    "--patience",
    type=int,
    default=4,
    show_default=True,
    help="Early stopping: epochs without improvement of --monitor.",
)
@click.option(
    "--monitor",
    type=click.Choice(["val_loss", "val_auc", "val_balanced_accuracy"]),
    default="val_loss",
    show_default=True,
)
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--test-fraction", type=float, default=0.15, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--pretrained/--from-scratch",
    default=None,
    help="Start from ImageNet MobileNetV2 weights (torch cache or --weights) or from "
    "random weights. One of the two is required.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="torchvision mobilenet_v2 ImageNet .pth file (implies --pretrained).",
)
@click.option(
    "--freeze-blocks",
    type=click.IntRange(0, 19),
    default=None,
    help="Backbone blocks (of 19) kept frozen. Default: 14 pretrained, 2 from scratch.",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Start from a checkpoint's weights (e.g. model_repository/.../1/checkpoint.pt).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for torch.")
@click.option(
    "--max-train-images", type=int, default=None, help="Cap the train split (smoke runs)."
)
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option(
    "--arch",
    type=click.Choice(["seed", "residual"]),
    default="seed",
    show_default=True,
    help="seed: MobileNetV2 (deepfake_detector); residual: the resampling-residual CNN "
    "(residual_detector, from scratch only).",
)
def train(**options: object) -> None:
    """Train the detector on real/ + fake/ folders or a CSV manifest.

    Examples:

      dfmod train --data data/demo --from-scratch --freeze-blocks 8 --epochs 12
      --monitor val_auc --out runs/demo

      dfmod train --data /data/ffpp_frames --pretrained --epochs 20 --out runs/ffpp
    """
    from training.data import DataError
    from training.model import WeightsNotFound
    from training.train import TrainConfig, run

    _setup_logging()
    pretrained = options.pop("pretrained")
    if options["weights"] is not None:
        pretrained = True
    if pretrained is None:
        raise click.UsageError("say --pretrained (ImageNet weights) or --from-scratch")
    values: dict[str, Any] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if k != "no_amp"
    }
    config = TrainConfig(**values, pretrained=bool(pretrained), amp=not options["no_amp"])
    try:
        out = run(config)
    except (DataError, WeightsNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"run folder: {out} (best checkpoint: {out / 'best.pt'})")


@click.command("evaluate")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint from dfmod train (best.pt) or a version's checkpoint.pt.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default: <checkpoint folder>/report).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Evaluate on this data instead of the checkpoint's own (same split rules).",
)
@click.option(
    "--genuine",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Genuine-photo manifest (dfmod genuine-photos): choose flag_at and pass_below by rates.",
)
@click.option(
    "--target-fpr",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.01,
    show_default=True,
    help="Largest share of genuine photos flagged at flag_at.",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.95,
    show_default=True,
    help="Smallest share of fakes not passed at pass_below.",
)
@click.option("--threads", type=int, default=2, show_default=True)
def evaluate(
    checkpoint: Path,
    out: Path | None,
    data: Path | None,
    genuine: Path | None,
    target_fpr: float,
    target_recall: float,
    threads: int,
) -> None:
    """Evaluate a checkpoint and write a report folder.

    Fits the calibration temperature on the validation split, reports accuracy, per-class and
    balanced accuracy, ROC AUC, average precision, EER, ECE before/after temperature scaling and the
    confusion matrix on the test split; writes report.json and ROC, reliability, histogram and
    training-curve PNGs. With --genuine, chooses flag_at for --target-fpr on the genuine
    photos' 'val' split and pass_below for --target-recall on the validation fakes, and reports
    both rates with 95 % intervals on the 'test' photos and test fakes; dfmod export then uses
    those thresholds.

    Example: dfmod evaluate --checkpoint runs/demo/best.pt --genuine data/genuine/manifest.csv
    """
    from training.data import DataError
    from training.evaluate import evaluate_checkpoint, summary_line
    from training.thresholds import summary_line as thresholds_line

    _setup_logging()
    out = out or checkpoint.parent / "report"
    try:
        report = evaluate_checkpoint(
            checkpoint=checkpoint,
            out=out,
            data=data,
            threads=threads,
            genuine=genuine,
            target_fpr=target_fpr,
            target_recall=target_recall,
        )
    except DataError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary_line(report))
    if "thresholds" in report:
        click.echo(thresholds_line(report["thresholds"]))
    click.echo(f"report: {out}")


@click.command("export")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Checkpoint to export (best.pt from dfmod train).",
)
@click.option(
    "--report",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="report.json from dfmod evaluate: temperature and metrics for the metadata.",
)
@click.option(
    "--repository",
    type=click.Path(path_type=Path),
    default=Path("model_repository"),
    show_default=True,
    help="Triton model repository root.",
)
@click.option("--version", type=int, default=None, help="Version number (default: next free).")
@click.option("--overwrite", is_flag=True, help="Replace an existing version folder.")
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Data for parity and INT8 checks (default: the checkpoint's own data).",
)
@click.option("--trained-on", default=None, help="Text for metadata 'trained_on'.")
@click.option(
    "--pass-below",
    type=float,
    default=None,
    help="Calibrated p(fake) below which items pass automatically "
    "(default: the report's chosen threshold, else 0.3).",
)
@click.option(
    "--flag-at",
    type=float,
    default=None,
    help="Calibrated p(fake) at or above which items are flagged automatically "
    "(default: the report's chosen threshold, else 0.8).",
)
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    default=Path("runs/export"),
    show_default=True,
    help="Folder for TorchScript, INT8 ONNX and export.json.",
)
@click.option("--no-torchscript", is_flag=True, help="Skip the TorchScript export.")
@click.option("--no-int8", is_flag=True, help="Skip INT8 quantisation.")
@click.option(
    "--model-name",
    default=None,
    help="Triton model to add the version to (default: deepfake_detector, or residual_detector "
    "for a --arch residual checkpoint).",
)
@click.option(
    "--demo-weights",
    is_flag=True,
    help="Mark the version as demo weights: it never auto-decides on its own (see README).",
)
def export(
    checkpoint: Path,
    report: Path | None,
    repository: Path,
    version: int | None,
    overwrite: bool,
    data: Path | None,
    trained_on: str | None,
    pass_below: float | None,
    flag_at: float | None,
    artifacts: Path,
    no_torchscript: bool,
    no_int8: bool,
    model_name: str | None,
    demo_weights: bool,
) -> None:
    """Export ONNX/TorchScript as a new model version.

    Writes model_repository/deepfake_detector/<N>/ with model.onnx (uint8 NHWC 'image' → 'logit'),
    metadata.json (temperature, thresholds, training data, metrics, code revision) and
    checkpoint.pt. Fails if any exported model's logits differ from PyTorch by more than 1e-4.

    Example: dfmod export --checkpoint runs/demo/best.pt --report runs/demo/report/report.json
    """
    from training.export import ExportParityError
    from training.release import ExportRequest
    from training.release import export as run_export

    _setup_logging()
    given = [v for v in (pass_below, flag_at) if v is not None]
    if any(not 0 <= v <= 1 for v in given) or (
        pass_below is not None and flag_at is not None and pass_below > flag_at
    ):
        raise click.UsageError("expected 0 <= --pass-below <= --flag-at <= 1")
    request = ExportRequest(
        checkpoint=checkpoint,
        repository=repository,
        report=report,
        data=data,
        version=version,
        trained_on=trained_on,
        artifacts=artifacts,
        torchscript=not no_torchscript,
        int8=not no_int8,
        pass_below=pass_below,
        flag_at=flag_at,
        overwrite=overwrite,
        model_name=model_name,
        demo_weights=demo_weights,
    )
    try:
        target, summary = run_export(request)
    except (ExportParityError, FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {target}")
    click.echo(json.dumps(summary, indent=2))

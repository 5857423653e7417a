"""The training loop: the seed recipe on CPU or CUDA, resumable, with per-epoch JSON-lines metrics.

A run folder holds ``config.json``, ``metrics.jsonl``, ``last.pt`` (for ``--resume``) and
``best.pt`` (docs/design.md, "Detector: training").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import residual
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import (
    ImageDataset,
    TrainAugment,
    balance_summary,
    discover,
    scan,
    stratified_split,
)
from training.losses import FocalLoss
from training.metrics import classification_metrics
from training.model import DeepfakeDetector, build_model, count_parameters, normalize_uint8_nhwc

logger = logging.getLogger(__name__)

ARCHS = ("seed", residual.ARCH)
MONITORS = {"val_loss": "min", "val_auc": "max", "val_balanced_accuracy": "max"}


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in every checkpoint so runs can be resumed and traced."""

    data: str
    out: str = "runs/train"
    epochs: int = 10
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    alpha: float = 0.5
    gamma: float = 3.0
    patience: int = 4
    monitor: str = "val_loss"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    pretrained: bool = False
    weights: str | None = None
    freeze_blocks: int | None = None
    init_from: str | None = None
    device: str = "auto"
    amp: bool = True
    threads: int = 2
    max_train_images: int | None = None
    resume: bool = False
    arch: str = "seed"  # "seed" (MobileNetV2, version 1) or "residual" (training/residual.py)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """Returns the device: ``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_data(config: TrainConfig) -> dict[str, ImageDataset]:
    """Discovers, splits, summarises and scans the data; errors before any training starts."""
    splits = stratified_split(
        discover(Path(config.data)),
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    if config.max_train_images:
        per_class = max(1, config.max_train_images // 2)
        splits["train"] = [
            s
            for label in (0, 1)
            for s in [x for x in splits["train"] if x.label == label][:per_class]
        ]
    logger.info("class balance:\n%s", balance_summary(splits))
    datasets = {}
    for name in ("train", "val"):
        scanned = scan(splits[name])
        if not scanned.samples:
            raise ValueError(
                f"the {name} split has no readable images; add data or change fractions"
            )
        augment = TrainAugment() if name == "train" else None
        datasets[name] = ImageDataset(scanned, augment=augment, seed=config.seed)
    return datasets


def build(config: TrainConfig) -> DeepfakeDetector:
    """Returns the model for a run: ImageNet, from scratch, or initialised from a checkpoint."""
    if config.arch not in ARCHS:
        raise ValueError(f"arch {config.arch!r}; expected one of {', '.join(ARCHS)}")
    if config.arch == residual.ARCH:
        if config.pretrained:
            raise ValueError("the residual detector has no pretrained weights; use --from-scratch")
        model: DeepfakeDetector = residual.build_residual()  # type: ignore[assignment]
    else:
        model = build_model(
            pretrained=config.pretrained,
            weights=config.weights,
            freeze_blocks=config.freeze_blocks,
        )
    if config.freeze_blocks is None:
        config.freeze_blocks = model.freeze_blocks
    if config.init_from:
        model.load_state_dict(load_checkpoint(Path(config.init_from))["model"])
        logger.info("initialised weights from %s", config.init_from)
    trainable = count_parameters(model, trainable_only=True)
    logger.info(
        "model: %d parameters, %d trainable, first %d backbone blocks frozen",
        count_parameters(model),
        trainable,
        model.freeze_blocks,
    )
    return model


@torch.no_grad()
def predict(model: DeepfakeDetector, loader: DataLoader, device: torch.device) -> np.ndarray:
    """Returns logits [N] for a loader of (uint8 NHWC, label) batches, in eval mode."""
    model.eval()
    out = [
        model(normalize_uint8_nhwc(images.to(device))).float().cpu().numpy()[:, 0]
        for images, _ in loader
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_one_epoch(
    model: DeepfakeDetector,
    loader: DataLoader,
    state: dict[str, Any],
    config: TrainConfig,
    epoch: int,
) -> dict[str, float]:
    """Runs one epoch; returns mean loss and images/s."""
    model.train()
    device, optimizer, scaler = state["device"], state["optimizer"], state["scaler"]
    criterion = FocalLoss(alpha=config.alpha, gamma=config.gamma)
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, mininterval=2.0)
    for step, (images, labels) in enumerate(bar, start=1):
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=state["amp"]):
            logits = model(normalize_uint8_nhwc(images))
        loss = criterion(logits.float(), labels)
        scaler.scale(loss / config.accumulate).backward()
        if step % config.accumulate == 0 or step == len(loader):
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        total_loss += float(loss.detach()) * len(labels)
        seen += len(labels)
        rate = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{rate:.1f}")
    return {
        "train_loss": total_loss / max(seen, 1),
        "train_images_per_s": seen / max(time.perf_counter() - start, 1e-9),
    }


def validate(
    model: DeepfakeDetector, loader: DataLoader, config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Returns validation loss and metrics."""
    logits = predict(model, loader, device)
    labels = np.array(loader.dataset.labels())  # type: ignore[attr-defined]
    criterion = FocalLoss(alpha=config.alpha, gamma=config.gamma)
    loss = float(criterion(torch.from_numpy(logits), torch.from_numpy(labels).float()))
    metrics = classification_metrics(labels, logits)
    return {
        "val_loss": loss,
        "val_accuracy": metrics["accuracy"],
        "val_balanced_accuracy": metrics["balanced_accuracy"],
        "val_auc": metrics.get("roc_auc", float("nan")),
        "val_ece": metrics["ece"],
    }


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def _make_state(model: DeepfakeDetector, config: TrainConfig) -> dict[str, Any]:
    device = pick_device(config.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    amp = config.amp and device.type == "cuda"
    return {
        "device": device,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "amp": amp,
        "scaler": torch.amp.GradScaler(device.type, enabled=amp),
        "epoch": 0,
        "best": None,
        "bad_epochs": 0,
        "history": [],
    }


def _restore(state: dict[str, Any], model: DeepfakeDetector, path: Path) -> None:
    saved = load_checkpoint(path)
    model.load_state_dict(saved["model"])
    state["optimizer"].load_state_dict(saved["optimizer"])
    state["scheduler"].load_state_dict(saved["scheduler"])
    state["scaler"].load_state_dict(saved.get("scaler", {}))
    state.update(
        epoch=saved["epoch"],
        best=saved.get("best_metric"),
        bad_epochs=saved.get("bad_epochs", 0),
        history=saved.get("history", []),
    )
    if "rng" in saved:
        torch.set_rng_state(saved["rng"])
    logger.info("resumed %s at epoch %d", path, saved["epoch"])


def _save(path: Path, model: DeepfakeDetector, state: dict[str, Any], config: TrainConfig) -> None:
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": state["optimizer"].state_dict(),
            "scheduler": state["scheduler"].state_dict(),
            "scaler": state["scaler"].state_dict(),
            "epoch": state["epoch"],
            "args": dataclasses.asdict(config),
            "metrics": state["history"][-1] if state["history"] else {},
            "best_metric": state["best"],
            "bad_epochs": state["bad_epochs"],
            "history": state["history"],
            "rng": torch.get_rng_state(),
        },
    )


def run(config: TrainConfig) -> Path:
    """Trains according to ``config`` and returns the run folder (best.pt inside)."""
    if config.monitor not in MONITORS:
        raise ValueError(f"monitor {config.monitor!r}; expected one of {', '.join(MONITORS)}")
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    out = Path(config.out).resolve()
    datasets = prepare_data(config)
    model = build(config)
    state = _make_state(model, config)
    model.to(state["device"])
    if config.resume and (out / "last.pt").exists():
        _restore(state, model, out / "last.pt")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        datasets["train"],
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(datasets["train"]) > config.batch_size,
    )
    val_loader = DataLoader(datasets["val"], batch_size=config.batch_size * 2)
    _loop(model, state, config, out, train_loader, val_loader)
    return out


def _loop(
    model: DeepfakeDetector,
    state: dict[str, Any],
    config: TrainConfig,
    out: Path,
    train_loader: DataLoader,
    val_loader: DataLoader,
) -> None:
    mode = MONITORS[config.monitor]
    while state["epoch"] < config.epochs:
        epoch = state["epoch"] + 1
        train_loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        record = {
            "epoch": epoch,
            "lr": state["optimizer"].param_groups[0]["lr"],
            **train_one_epoch(model, train_loader, state, config, epoch),
            **validate(model, val_loader, config, state["device"]),
        }
        state["scheduler"].step()
        state["epoch"] = epoch
        state["history"].append(record)
        improved = _improved(record[config.monitor], state["best"], mode)
        state["best"] = record[config.monitor] if improved else state["best"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        logger.info(
            "epoch %d: %s",
            epoch,
            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)),
        )
        _save(out / "last.pt", model, state, config)
        if improved:
            _save(out / "best.pt", model, state, config)
        if state["bad_epochs"] >= config.patience:
            logger.info(
                "early stop: %s did not improve for %d epochs", config.monitor, config.patience
            )
            break

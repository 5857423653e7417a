"""Checkpoint files: the resumable training state and the slim weights file beside a model version.

A training checkpoint holds model, optimiser, scheduler, epoch, arguments and metrics so a run can
resume exactly. The version checkpoint (``checkpoint.pt`` in ``model_repository``) holds only the
weights and the arguments, enough to evaluate it or to fine-tune the next version from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from training.model import DeepfakeDetector

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Writes a checkpoint atomically (temporary file, then rename) and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Returns a checkpoint's contents, with a clear error when the file is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; expected a file from dfmod train"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a dfmod checkpoint; expected a dict with a 'model' entry")
    return state


def model_from_checkpoint(path: Path) -> tuple[DeepfakeDetector, dict[str, Any]]:
    """Returns the detector with a checkpoint's weights (eval mode) and the checkpoint dict."""
    state = load_checkpoint(path)
    args = state.get("args", {})
    model: DeepfakeDetector
    if args.get("arch") == "residual":
        from training.residual import build_residual

        model = build_residual()  # type: ignore[assignment]
    else:
        model = DeepfakeDetector(freeze_blocks=int(args.get("freeze_blocks") or 0))
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def slim_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """Returns the weights-and-arguments subset of a training checkpoint (no optimiser)."""
    keep = ("model", "args", "epoch", "metrics", "best_metric", "history")
    return {k: state[k] for k in keep if k in state}

"""The residual detector through the project's own tooling: train → evaluate → export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from moderation import contract
from moderation.cli import main
from training.checkpoint import model_from_checkpoint
from training.export import onnx_logits, onnx_session
from training.residual import ResidualDetector, resampling_residual


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_residual_removes_what_survives_resampling() -> None:
    flat = torch.full((1, 3, 8, 8), 0.7)
    assert torch.allclose(resampling_residual(flat), torch.zeros_like(flat))
    blocky = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4), scale_factor=2.0)
    assert torch.allclose(resampling_residual(blocky), torch.zeros_like(blocky), atol=1e-6)
    assert resampling_residual(torch.rand(1, 3, 8, 8)).abs().sum() > 0


@pytest.mark.slow
def test_train_evaluate_export_a_residual_detector(tmp_path: Path) -> None:
    data, run, repo = tmp_path / "demo", tmp_path / "run", tmp_path / "repo"
    _invoke("demo-data", "--out", str(data), "--per-class", "16", "--size", "128")
    _invoke(
        "train", "--data", str(data), "--arch", "residual", "--from-scratch", "--epochs", "1",
        "--batch-size", "8", "--out", str(run), "--val-fraction", "0.25", "--test-fraction", "0.25",
    )  # fmt: skip
    model, state = model_from_checkpoint(run / "best.pt")
    assert isinstance(model, ResidualDetector) and state["args"]["arch"] == "residual"
    _invoke("evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(run / "report"))
    report = str(run / "report" / "report.json")
    _invoke(
        "export", "--checkpoint", str(run / "best.pt"), "--report", report, "--repository",
        str(repo), "--artifacts", str(tmp_path / "artifacts"), "--no-torchscript", "--no-int8",
        "--demo-weights",
    )  # fmt: skip
    version = repo / "residual_detector" / "1"
    meta = json.loads((version / contract.METADATA_FILENAME).read_text())
    assert meta["extra"]["demo_weights"] is True
    assert meta["extra"]["architecture"].startswith("resampling residual")
    assert meta["extra"]["training"]["arch"] == "residual"
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    served = onnx_logits(onnx_session(version / contract.ONNX_FILENAME), images)
    assert served.shape == (3,) and np.all(np.isfinite(served))
    refused = CliRunner().invoke(
        main,
        ["train", "--data", str(data), "--arch", "residual", "--pretrained", "--out", str(run)],
    )
    assert refused.exit_code != 0

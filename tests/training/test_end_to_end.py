"""One small real run through the CLI: demo data → train → resume → evaluate → export → parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moderation import contract
from moderation.cli import main
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.export import check_parity, onnx_logits, onnx_session


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_demo_data_train_evaluate_export(tmp_path: Path) -> None:
    data, run, repo = tmp_path / "demo", tmp_path / "run", tmp_path / "repo"
    _invoke("demo-data", "--out", str(data), "--per-class", "20", "--size", "128")
    common = [
        "train",
        "--data",
        str(data),
        "--from-scratch",
        "--freeze-blocks",
        "14",
        "--batch-size",
        "8",
        "--accumulate",
        "2",
        "--out",
        str(run),
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    ]
    _invoke(*common, "--epochs", "1")
    _invoke(*common, "--epochs", "2", "--resume")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "val_loss", "val_auc", "train_images_per_s", "lr"} <= set(history[0])
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "args", "metrics"} <= set(last)

    output = _invoke("evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(run / "report"))
    assert "balanced" in output and "ECE" in output
    report = json.loads((run / "report" / "report.json").read_text())
    for key in (
        "accuracy",
        "real_accuracy",
        "fake_accuracy",
        "balanced_accuracy",
        "roc_auc",
        "average_precision",
        "eer",
        "confusion_matrix",
    ):
        assert key in report["metrics"]
    assert report["temperature"] > 0 and "ece_after" in report
    for png in ("roc.png", "reliability.png", "score_histograms.png", "training_curves.png"):
        assert (run / "report" / png).read_bytes()[:4] == b"\x89PNG"

    _invoke(
        "export",
        "--checkpoint",
        str(run / "best.pt"),
        "--report",
        str(run / "report" / "report.json"),
        "--repository",
        str(repo),
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--trained-on",
        "tiny synthetic demo set",
    )
    version = repo / contract.MODEL_NAME / "1"
    meta = contract.ModelMetadata.read(version)
    assert meta.trained_on == "tiny synthetic demo set"
    assert meta.temperature == pytest.approx(report["temperature"])
    assert meta.metrics["balanced_accuracy"] == report["metrics"]["balanced_accuracy"]
    assert meta.extra["int8"]["int8_bytes"] < meta.extra["int8"]["fp32_bytes"]
    assert "balanced_accuracy" in meta.extra["int8"]["metric_deltas"]
    assert (tmp_path / "artifacts" / "v1" / contract.TORCHSCRIPT_FILENAME).exists()
    assert "optimizer" not in load_checkpoint(version / "checkpoint.pt")

    model, _ = model_from_checkpoint(version / "checkpoint.pt")
    session = onnx_session(version / contract.ONNX_FILENAME)
    images = np.stack([np.asarray(p) for p in _demo_arrays(data)])
    check_parity(model, lambda x: onnx_logits(session, x), images)
    assert session.run(None, {"image": images[:5]})[0].shape == (5, 1)


def _demo_arrays(data: Path) -> list[np.ndarray]:
    from moderation.preprocess import load_image

    files = sorted((data / "fake").glob("*.jpg"))[:3] + sorted((data / "real").glob("*.jpg"))[:3]
    return [load_image(f.read_bytes()) for f in files]


def test_commands_have_help() -> None:
    for command in ("demo-data", "train", "evaluate", "export"):
        output = _invoke(command, "--help")
        assert "Example" in output, command


def test_train_requires_an_initialisation_choice(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "--from-scratch" in result.output


def test_train_without_weights_explains_how_to_get_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _invoke("demo-data", "--out", str(tmp_path / "d"), "--per-class", "4", "--size", "64")
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tmp_path / "d"), "--pretrained", "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 1
    assert "--weights FILE" in result.output and "--from-scratch" in result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_data_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    result = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path), "--from-scratch", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1 and "real holds no images" in result.output
    assert not (tmp_path / "run").exists()

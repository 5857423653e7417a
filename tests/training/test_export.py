"""Export: the ONNX contract, parity checks that fail loudly, TorchScript, INT8, version folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moderation import contract
from moderation.version_folders import next_version
from training.checkpoint import model_from_checkpoint
from training.export import (
    ExportParityError,
    check_parity,
    export_onnx,
    export_torchscript,
    onnx_logits,
    onnx_session,
    quantize_int8,
    torch_logits,
    torchscript_runner,
    write_version,
)
from training.model import DeepfakeDetector, normalize_uint8_nhwc
from training.release import generated_images

REPO_VERSION_1 = (
    Path(__file__).resolve().parents[2] / "model_repository" / contract.MODEL_NAME / "1"
)


@pytest.fixture(scope="module")
def model() -> DeepfakeDetector:
    torch.manual_seed(1)
    detector = DeepfakeDetector(freeze_blocks=0)
    # Random BatchNorm statistics collapse every output to one value; estimate them on demo images
    # so outputs differ between images and parity means something.
    for module in detector.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
    detector.train()
    with torch.no_grad():
        detector(normalize_uint8_nhwc(torch.from_numpy(generated_images(8))))
    return detector.eval()


@pytest.fixture(scope="module")
def onnx_file(model: DeepfakeDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def _check_contract(path: Path, *, cam_output: bool = True) -> None:
    session = onnx_session(path)
    (inp,), (out, *cams) = session.get_inputs(), session.get_outputs()
    assert len(cams) == int(cam_output)
    assert (inp.name, inp.type) == (contract.INPUT_NAME, "tensor(uint8)")
    assert inp.shape[1:] == [224, 224, 3] and not isinstance(inp.shape[0], int)
    assert (out.name, out.type) == (contract.OUTPUT_NAME, "tensor(float)")
    assert out.shape[1:] == [1] and not isinstance(out.shape[0], int)
    for cam in cams:
        assert (cam.name, cam.type) == (contract.CAM_NAME, "tensor(float)")
        assert cam.shape[1:] == list(contract.CAM_SHAPE) and not isinstance(cam.shape[0], int)
    for batch in (1, 5):
        result, *maps = session.run(None, {contract.INPUT_NAME: _images(batch)})
        assert result.shape == (batch, 1) and result.dtype == np.float32
        assert all(m.shape == (batch, *contract.CAM_SHAPE) for m in maps)


def test_onnx_follows_the_contract_and_matches_pytorch(
    model: DeepfakeDetector, onnx_file: Path
) -> None:
    _check_contract(onnx_file)
    session = onnx_session(onnx_file)
    report = check_parity(model, lambda x: onnx_logits(session, x), _images(4, seed=3))
    assert report.random_max_abs <= 1e-4 and report.real_max_abs <= 1e-4
    real = generated_images(6)
    assert np.ptp(torch_logits(model, real)) > 1e-2  # outputs vary, so parity is meaningful
    check_parity(model, lambda x: onnx_logits(session, x), real)


def test_parity_failure_is_loud(model: DeepfakeDetector) -> None:
    def drifted(images: np.ndarray) -> np.ndarray:
        return torch_logits(model, images) + 1e-3

    with pytest.raises(ExportParityError, match=r"expected at most 0\.0001"):
        check_parity(model, drifted, _images(2))
    with pytest.raises(ExportParityError):
        check_parity(model, lambda x: np.full(len(x), np.nan, dtype=np.float32), _images(2))


def test_torchscript_matches_pytorch(model: DeepfakeDetector, tmp_path: Path) -> None:
    path = export_torchscript(model, tmp_path / "model.pt")
    run = torchscript_runner(path)
    assert run(_images(3)).shape == (3,)
    check_parity(model, run, _images(2, seed=9))


def test_int8_is_smaller_and_close(onnx_file: Path, tmp_path: Path) -> None:
    out = quantize_int8(onnx_file, tmp_path / "model.int8.onnx", _images(8, seed=5))
    _check_contract(out, cam_output=False)
    assert out.stat().st_size < onnx_file.stat().st_size * 0.4


def test_write_version_creates_numbered_folder(model: DeepfakeDetector, tmp_path: Path) -> None:
    model_dir = tmp_path / contract.MODEL_NAME
    assert next_version(model_dir) == 1
    meta = contract.ModelMetadata(version=0, temperature=1.7, trained_on="unit test")
    state = {"model": model.state_dict(), "args": {"freeze_blocks": 0}}
    target, parity = write_version(
        model=model,
        model_dir=model_dir,
        version=1,
        metadata=meta,
        checkpoint=state,
        real_images=_images(2),
    )
    assert sorted(p.name for p in target.iterdir()) == [
        "checkpoint.pt",
        "metadata.json",
        "model.onnx",
    ]
    written = contract.ModelMetadata.read(target)
    assert written.version == 1 and written.temperature == 1.7
    assert written.extra["onnx_parity"]["random_max_abs"] == parity.random_max_abs
    assert written.extra["cam_parity"]["real_max_abs"] <= 1e-4
    assert next_version(model_dir) == 2
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_version(
            model=model,
            model_dir=model_dir,
            version=1,
            metadata=meta,
            checkpoint=state,
            real_images=_images(2),
        )
    assert not list(model_dir.glob(".*staging"))


def test_committed_version_1_follows_the_contract() -> None:
    _check_contract(REPO_VERSION_1 / contract.ONNX_FILENAME)
    meta = contract.ModelMetadata.read(REPO_VERSION_1)
    assert meta.version == 1 and meta.temperature > 0
    assert 0 <= meta.pass_below <= meta.flag_at <= 1
    assert "synthetic demo set" in meta.trained_on and "Demo weights" in meta.trained_on
    assert {"accuracy", "balanced_accuracy", "roc_auc", "eer", "ece_after"} <= set(meta.metrics)
    model, state = model_from_checkpoint(REPO_VERSION_1 / "checkpoint.pt")
    assert "optimizer" not in state and "args" in state
    session = onnx_session(REPO_VERSION_1 / contract.ONNX_FILENAME)
    check_parity(model, lambda x: onnx_logits(session, x), _images(2, seed=11))

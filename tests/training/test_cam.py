"""Grad-CAM in the served graph equals torch autograd's Grad-CAM within 1e-4.

Checked three ways: the hand-written head gradient in PyTorch, the exported ONNX graph, and the
committed version 1 file, each on fresh random images and on demo images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moderation import contract
from moderation.preprocess import load_image
from training.cam import WEAK_MAP, CamExportWrapper, autograd_cam
from training.checkpoint import model_from_checkpoint
from training.demo_data import make_fake, make_real
from training.export import (
    check_cam_parity,
    export_onnx,
    onnx_cams,
    onnx_logits,
    onnx_session,
    reference_cams,
    torch_logits,
)
from training.model import DeepfakeDetector, ExportWrapper

TOLERANCE = 1e-4
VERSION_1 = Path(__file__).resolve().parents[2] / "model_repository" / contract.MODEL_NAME / "1"


def _demo(count: int) -> np.ndarray:
    images = []
    for index in range(count):
        rng = np.random.default_rng([7, index])
        make = make_fake if index % 2 else make_real
        images.append(load_image(make(rng, 256)))
    return np.stack(images)


def _random(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *contract.INPUT_SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def version_1() -> DeepfakeDetector:
    return model_from_checkpoint(VERSION_1 / "checkpoint.pt")[0]


@pytest.fixture(scope="module")
def shaken() -> DeepfakeDetector:
    """A random detector whose batch norms have non-trivial statistics and affine weights."""
    torch.manual_seed(3)
    model = DeepfakeDetector(freeze_blocks=0)
    for module in model.features.modules():  # backbone statistics of real activations
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.features.train()(torch.randn(8, 3, 224, 224))
    for module in [*model.attention.modules(), *model.classifier.modules()]:
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
            module.running_var.uniform_(0.2, 3.0)  # type: ignore[union-attr]
            module.weight.data.uniform_(0.3, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _graph(model: DeepfakeDetector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logit, cam = CamExportWrapper(model).eval()(torch.from_numpy(images))
    return logit.numpy()[:, 0], cam.numpy()


@pytest.mark.parametrize("which", ["version_1", "shaken"])
def test_forward_gradient__equals_autograd_on_random_and_demo_images(
    which: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(which)
    for images in (_random(4, seed=1), _demo(4)):
        logits, cams = _graph(model, images)
        reference = reference_cams(model, images)
        assert cams.shape == (len(images), *contract.CAM_SHAPE)
        assert np.abs(cams - reference).max() <= TOLERANCE
        assert np.abs(logits - torch_logits(model, images)).max() <= 1e-5
        assert cams.max() <= 1.0 + 1e-6 and cams.min() >= 0.0  # scaled to [0, 1]


def test_autograd_reference__is_grad_cam_of_the_last_feature_map(shaken: DeepfakeDetector) -> None:
    """The reference itself: weights are the spatial mean of d logit / d features."""
    images = torch.randn(2, 3, 224, 224)
    features = shaken.features(images).detach().requires_grad_(True)
    shaken.classifier(shaken.attention(features).mean(dim=(2, 3))).sum().backward()
    assert features.grad is not None
    contributions = features.grad.mean(dim=(2, 3), keepdim=True) * features
    heat = torch.relu(contributions.sum(dim=1))
    largest = contributions.abs().sum(dim=1).amax(dim=(1, 2), keepdim=True)
    expected = heat / torch.maximum(heat.amax(dim=(1, 2), keepdim=True), WEAK_MAP * largest)
    assert torch.allclose(autograd_cam(shaken, images), expected.detach(), atol=1e-6)


def test_cam_graph__refuses_a_feature_map_that_can_be_negative() -> None:
    model = DeepfakeDetector(freeze_blocks=0).eval()
    CamExportWrapper(model)  # MobileNetV2 ends in ReLU6: |F| = F holds
    model.features[-1][-1] = torch.nn.SiLU()
    with pytest.raises(TypeError, match="SiLU"):
        CamExportWrapper(model)


def test_exported_onnx__cam_matches_autograd(shaken: DeepfakeDetector, tmp_path: Path) -> None:
    path = export_onnx(shaken, tmp_path / "model.onnx")
    session = onnx_session(path)
    assert [o.name for o in session.get_outputs()] == [contract.OUTPUT_NAME, contract.CAM_NAME]
    report = check_cam_parity(shaken, lambda x: onnx_cams(session, x), _demo(4))
    assert max(report["random_max_abs"], report["real_max_abs"]) <= TOLERANCE


def test_logit_only_export__still_available(shaken: DeepfakeDetector, tmp_path: Path) -> None:
    path = export_onnx(shaken, tmp_path / "model.onnx", cam=False)
    session = onnx_session(path)
    assert [o.name for o in session.get_outputs()] == [contract.OUTPUT_NAME]
    images = _random(2, seed=5)
    with torch.no_grad():
        expected = ExportWrapper(shaken)(torch.from_numpy(images)).numpy()[:, 0]
    assert np.abs(onnx_logits(session, images) - expected).max() <= 1e-4


def test_committed_version_1__serves_cam_with_its_recorded_logits(
    version_1: DeepfakeDetector,
) -> None:
    session = onnx_session(VERSION_1 / contract.ONNX_FILENAME)
    assert [o.name for o in session.get_outputs()] == [contract.OUTPUT_NAME, contract.CAM_NAME]
    images = np.concatenate([_random(2, seed=9), _demo(4)])
    assert np.abs(onnx_cams(session, images) - reference_cams(version_1, images)).max() <= TOLERANCE
    # Same weights as when its metrics were measured: the logits are the checkpoint's.
    assert np.abs(onnx_logits(session, images) - torch_logits(version_1, images)).max() <= 1e-4
    fake = load_image(make_fake(np.random.default_rng([7, 1]), 256))[None]
    assert onnx_cams(session, fake).max() == pytest.approx(1.0)  # a fake's map is a strong one
    meta = contract.ModelMetadata.read(VERSION_1)
    assert meta.extra["reexport"]["logit_max_abs_vs_previous"] <= 1e-4
    assert meta.extra["cam_parity"]["tolerance"] == TOLERANCE
    assert meta.metrics["count"] == 300  # the evaluation it was released with, unchanged

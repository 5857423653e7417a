"""The seed architecture: sizes, output shape, freezing and local-only ImageNet weights."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v2

from moderation.contract import IMAGENET_MEAN, IMAGENET_STD
from training.model import (
    BACKBONE_BLOCKS,
    DeepfakeDetector,
    ExportWrapper,
    WeightsNotFound,
    build_model,
    count_parameters,
)


@pytest.fixture(scope="module")
def model() -> DeepfakeDetector:
    torch.manual_seed(0)
    return DeepfakeDetector(freeze_blocks=14)


def test_parameter_counts_match_the_seed(model: DeepfakeDetector) -> None:
    assert count_parameters(model.features) == 2_223_872
    assert count_parameters(model.attention) == 657_408
    assert count_parameters(model.classifier) == 345_089
    assert count_parameters(model) == 2_223_872 + 657_408 + 345_089


def test_no_imagenet_head(model: DeepfakeDetector) -> None:
    shapes = [tuple(v.shape) for v in model.state_dict().values()]
    assert not any(1000 in s for s in shapes)
    assert set(dict(model.named_children())) == {"features", "attention", "classifier"}


def test_output_is_one_logit_per_image(model: DeepfakeDetector) -> None:
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 224, 224)).shape == (3, 1)
        features = model.features(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, 1280, 7, 7)


def test_freezing_is_by_backbone_block() -> None:
    model = DeepfakeDetector(freeze_blocks=14)
    for index, block in enumerate(model.features):
        assert all(p.requires_grad == (index >= 14) for p in block.parameters()), index
    assert all(p.requires_grad for p in model.attention.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    model.train()
    assert not model.features[13].training and model.features[14].training
    model.set_frozen_blocks(0)
    assert count_parameters(model, trainable_only=True) == count_parameters(model)


@pytest.mark.parametrize("count", [-1, BACKBONE_BLOCKS + 1])
def test_freezing_rejects_out_of_range(count: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 19"):
        DeepfakeDetector(freeze_blocks=count)


def test_default_freezing_depends_on_initialisation(tmp_path, monkeypatch) -> None:
    assert build_model(pretrained=False).freeze_blocks == 2
    weights = tmp_path / "mobilenet_v2-test.pth"
    reference = mobilenet_v2(weights=None)
    torch.save(reference.state_dict(), weights)
    model = build_model(pretrained=True, weights=weights)
    assert model.freeze_blocks == 14
    assert torch.equal(model.features[3].conv[0][0].weight, reference.features[3].conv[0][0].weight)


def test_pretrained_without_weights_says_how_to_provide_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsNotFound, match="--from-scratch") as info:
        build_model(pretrained=True)
    assert str(tmp_path / "checkpoints") in str(info.value)
    with pytest.raises(WeightsNotFound, match="does not exist"):
        build_model(pretrained=True, weights=tmp_path / "missing.pth")


def test_weights_found_in_torch_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        mobilenet_v2(weights=None).state_dict(), tmp_path / "checkpoints" / "mobilenet_v2-abc.pth"
    )
    assert build_model(pretrained=True).freeze_blocks == 14


def test_export_wrapper_normalises_like_imagenet(model: DeepfakeDetector) -> None:
    model.eval()
    images = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected_input = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        expected = model(expected_input)
        got = ExportWrapper(model)(images)
    assert got.shape == (2, 1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

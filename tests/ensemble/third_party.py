"""A "third-party" detector as people publish them: plain ONNX, NCHW float32, ImageNet-normalised.

Built with torch at test time (a tiny conv net with fixed random weights), exported with the
input and output names such exports usually carry, plus the manifest that describes it honestly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class TinyNet(nn.Module):
    """Conv → ReLU → GAP → Linear; ``classes`` outputs (1: one logit)."""

    def __init__(self, classes: int = 1, sigmoid: bool = False) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, classes)
        with torch.no_grad():  # logits of a few units, as a trained detector gives
            self.fc.weight.mul_(20.0)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return torch.sigmoid(y) if self.sigmoid else y


def export(
    path: Path,
    *,
    size: int = 96,
    layout: str = "NCHW",
    classes: int = 1,
    sigmoid: bool = False,
    input_name: str = "pixel_values",
    output_name: str = "logits",
) -> Path:
    """Writes the ONNX file; NHWC graphs transpose inside."""
    net = TinyNet(classes, sigmoid).eval()
    module: nn.Module = net
    shape = (2, 3, size, size)
    if layout == "NHWC":

        class Nhwc(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x.permute(0, 3, 1, 2))

        module, shape = Nhwc().eval(), (2, size, size, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def manifest(**changes: Any) -> dict[str, Any]:
    """Returns the honest manifest of the default export, with sections updated by ``changes``."""
    data: dict[str, Any] = {
        "input": {
            "name": "pixel_values",
            "layout": "NCHW",
            "size": 96,
            "dtype": "float32",
            "colour_order": "RGB",
            "resize": "bilinear",
            "normalisation": dict(IMAGENET),
        },
        "output": {"name": "logits", "meaning": "logit"},
        "weights": {
            "licence": "Apache-2.0",
            "provenance": "fixed random weights made by the dfmod test suite",
        },
    }
    for section, values in changes.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return data


def write_manifest(path: Path, **changes: Any) -> Path:
    """Writes :func:`manifest` as YAML."""
    path.write_text(yaml.safe_dump(manifest(**changes), sort_keys=False))
    return path

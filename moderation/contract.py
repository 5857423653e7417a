"""The model's I/O contract: the one place export, Triton config, worker and tests read it from.

``image`` UINT8 [batch, 224, 224, 3] RGB in (normalised inside the graph); ``logit`` FP32
[batch, 1] and, where served, ``cam`` FP32 [batch, 7, 7] out. Calibration and thresholds travel in
each version's ``metadata.json`` (docs/design.md, "Contracts").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_NAME = "deepfake_detector"
INPUT_NAME = "image"
OUTPUT_NAME = "logit"
CAM_NAME = "cam"
CAM_SIZE = 7  # the last feature map's height and width for a 224 x 224 input
CAM_SHAPE = (CAM_SIZE, CAM_SIZE)  # per item, batch axis first in tensors
INPUT_SIZE = 224
INPUT_CHANNELS = 3
INPUT_SHAPE = (INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS)  # per item, batch axis first in tensors
INPUT_DTYPE = "uint8"
TRITON_INPUT_DTYPE = "UINT8"
OUTPUT_DTYPE = "float32"
TRITON_OUTPUT_DTYPE = "FP32"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ONNX_FILENAME = "model.onnx"
TORCHSCRIPT_FILENAME = "model.pt"
METADATA_FILENAME = "metadata.json"


@dataclass(frozen=True)
class ModelMetadata:
    """What travels with one model version: calibration, thresholds and provenance."""

    version: int
    temperature: float = 1.0
    # Calibrated p(fake) below pass_below: auto pass; at or above flag_at: auto flag; else review.
    pass_below: float = 0.3
    flag_at: float = 0.8
    trained_on: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    code_revision: str = ""
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Returns the metadata as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """Returns metadata from a dict, keeping unknown keys under ``extra``."""
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in data.items() if k not in known}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("extra", {}).update(extra)
        return cls(**kwargs)

    @classmethod
    def read(cls, version_dir: Path) -> ModelMetadata:
        """Returns the metadata stored in a version folder (defaults when absent)."""
        path = Path(version_dir) / METADATA_FILENAME
        if not path.exists():
            return cls(version=int(Path(version_dir).name))
        return cls.from_dict(json.loads(path.read_text()))

    def write(self, version_dir: Path) -> Path:
        """Writes ``metadata.json`` into a version folder and returns its path."""
        path = Path(version_dir) / METADATA_FILENAME
        path.write_text(self.to_json())
        return path

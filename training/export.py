"""Export a trained detector as a numbered Triton model version, checked against PyTorch itself.

The graph takes the contract's uint8 ``image`` and returns ``logit`` and ``cam``; a version whose
outputs differ from PyTorch's by more than :data:`PARITY_TOLERANCE` is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from moderation import contract
from moderation.version_folders import write_version as write_folder
from training.cam import CamExportWrapper, autograd_cam
from training.checkpoint import save_checkpoint
from training.model import DeepfakeDetector, ExportWrapper

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
ONNX_OPSET = 17  # runs on onnxruntime 1.32 and on the onnxruntime of older Triton images
INT8_FILENAME = "model.int8.onnx"
CHECKPOINT_FILENAME = "checkpoint.pt"


class ExportParityError(RuntimeError):
    """The exported model's logits differ from PyTorch's beyond the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute logit difference on random and on real inputs."""

    random_max_abs: float
    real_max_abs: float
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        """Returns the report as a JSON-ready dict."""
        return {
            "random_max_abs": self.random_max_abs,
            "real_max_abs": self.real_max_abs,
            "samples": self.samples,
            "tolerance": PARITY_TOLERANCE,
        }


def _example_input(batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, *contract.INPUT_SHAPE)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def served_outputs(*, cam: bool = True) -> list[str]:
    """Returns the output names of an exported graph, in order."""
    return [contract.OUTPUT_NAME, contract.CAM_NAME] if cam else [contract.OUTPUT_NAME]


def export_onnx(
    model: DeepfakeDetector, path: Path, *, opset: int = ONNX_OPSET, cam: bool = True
) -> Path:
    """Writes the served ONNX graph (uint8 NHWC → logit [, cam]) with a dynamic batch axis."""
    wrapper = (CamExportWrapper(model) if cam else ExportWrapper(model)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = served_outputs(cam=cam)
    names: dict[str, Any] = {"input_names": [contract.INPUT_NAME], "output_names": outputs}
    axes = {name: {0: "batch"} for name in (contract.INPUT_NAME, *outputs)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:  # the TorchScript-based exporter gives a compact single-file graph
            torch.onnx.export(
                wrapper,
                (_example_input(),),
                str(path),
                dynamo=False,
                opset_version=opset,
                dynamic_axes=axes,
                **names,
            )
        except TypeError:  # a torch without the legacy exporter
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                wrapper,
                (_example_input(),),
                str(path),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: batch},),
                **names,
            )
    _check_onnx_signature(path, outputs)
    return path


def _check_onnx_signature(path: Path, expected: list[str]) -> None:
    import onnx

    graph = onnx.load(str(path)).graph
    inputs, outputs = [i.name for i in graph.input], [o.name for o in graph.output]
    if inputs != [contract.INPUT_NAME] or outputs != expected:
        raise ExportParityError(
            f"exported graph has inputs {inputs} and outputs {outputs}; "
            f"expected [{contract.INPUT_NAME!r}] and {expected}"
        )


def onnx_session(path: Path, *, threads: int = 2) -> ort.InferenceSession:
    """Returns a CPU onnxruntime session for a model file."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(
    session: ort.InferenceSession, images: np.ndarray, *, batch: int = 32
) -> np.ndarray:
    """Returns the ``logit`` output [N] for uint8 NHWC images, in chunks of ``batch``."""
    out = [
        session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i : i + batch]})[0]
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)[:, 0] if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def torch_logits(
    model: DeepfakeDetector | ExportWrapper, images: np.ndarray, *, batch: int = 32
) -> np.ndarray:
    """Returns PyTorch's logits [N] for uint8 NHWC images through :class:`ExportWrapper`."""
    wrapper = model if isinstance(model, ExportWrapper) else ExportWrapper(model)
    wrapper.eval()
    out = [
        wrapper(torch.from_numpy(np.ascontiguousarray(images[i : i + batch]))).numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)[:, 0] if out else np.zeros(0, dtype=np.float32)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if len(a) else 0.0


def check_parity(
    model: DeepfakeDetector, run_exported: Any, real_images: np.ndarray, *, random_count: int = 8
) -> ParityReport:
    """Compares PyTorch with an exported model on fresh random and on real images; raises on drift.

    ``run_exported`` maps uint8 NHWC images to logits [N].
    """
    fresh = np.random.default_rng().integers(
        0, 256, (random_count, *contract.INPUT_SHAPE), dtype=np.uint8
    )
    report = ParityReport(
        random_max_abs=_max_diff(torch_logits(model, fresh), run_exported(fresh)),
        real_max_abs=_max_diff(torch_logits(model, real_images), run_exported(real_images)),
        samples=random_count + len(real_images),
    )
    worst = max(report.random_max_abs, report.real_max_abs)
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        raise ExportParityError(
            f"exported logits differ from PyTorch by {worst:.3g} "
            f"(random {report.random_max_abs:.3g}, real "
            f"{report.real_max_abs:.3g}); expected at most {PARITY_TOLERANCE}"
        )
    logger.info(
        "parity ok: max |Δ logit| random %.2e, real %.2e",
        report.random_max_abs,
        report.real_max_abs,
    )
    return report


def onnx_cams(session: ort.InferenceSession, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """Returns the ``cam`` output [N, 7, 7] for uint8 NHWC images, in chunks of ``batch``."""
    out = [
        session.run([contract.CAM_NAME], {contract.INPUT_NAME: images[i : i + batch]})[0]
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, *contract.CAM_SHAPE), dtype=np.float32)


def reference_cams(model: DeepfakeDetector, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    """Returns torch autograd's Grad-CAM [N, 7, 7] for uint8 NHWC images."""
    wrapper = ExportWrapper(model).eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch]))
        x = x.permute(0, 3, 1, 2).to(torch.float32) * wrapper.scale - wrapper.shift
        out.append(autograd_cam(model, x).numpy())
    return np.concatenate(out) if out else np.zeros((0, *contract.CAM_SHAPE), dtype=np.float32)


def check_cam_parity(
    model: DeepfakeDetector, run_exported: Any, real_images: np.ndarray, *, random_count: int = 8
) -> dict[str, float | int]:
    """Compares the exported ``cam`` with autograd Grad-CAM on random and real images; raises."""
    fresh = np.random.default_rng().integers(
        0, 256, (random_count, *contract.INPUT_SHAPE), dtype=np.uint8
    )
    report: dict[str, float | int] = {
        "random_max_abs": _max_diff(reference_cams(model, fresh), run_exported(fresh)),
        "real_max_abs": _max_diff(reference_cams(model, real_images), run_exported(real_images)),
        "samples": random_count + len(real_images),
        "tolerance": PARITY_TOLERANCE,
    }
    worst = max(float(report["random_max_abs"]), float(report["real_max_abs"]))
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        raise ExportParityError(
            f"exported Grad-CAM maps differ from torch autograd by {worst:.3g}; "
            f"expected at most {PARITY_TOLERANCE}"
        )
    logger.info("cam parity ok: max |Δ cam| %.2e", worst)
    return report


def export_torchscript(model: DeepfakeDetector, path: Path) -> Path:
    """Writes a traced TorchScript module with the same uint8 NHWC signature as the ONNX graph."""
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example_input(),))
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def torchscript_runner(path: Path) -> Any:
    """Returns a function images → logits [N] for a saved TorchScript file."""
    module = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images))).numpy()[:, 0]

    return run


class _Calibration:
    """Feeds calibration images to onnxruntime's static quantiser, a few at a time."""

    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i : i + batch] for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {contract.INPUT_NAME: batch}


def _logit_only(onnx_path: Path, out_path: Path) -> Path:
    """Returns a copy of the graph that computes ``logit`` alone (the path itself if it does)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(onnx_path))
    if [o.name for o in model.graph.output] == [contract.OUTPUT_NAME]:
        return onnx_path
    pruned = Extractor(model).extract_model([contract.INPUT_NAME], [contract.OUTPUT_NAME])
    onnx.save(pruned, str(out_path))
    return out_path


def quantize_int8(onnx_path: Path, out_path: Path, calibration_images: np.ndarray) -> Path:
    """Writes a statically quantised INT8 (QDQ) copy of an ONNX model, calibrated on images.

    The copy computes ``logit`` only: the quantiser cannot share a weight between the head's Gemm
    and the Grad-CAM gradient's MatMul (per-channel axes differ), and INT8 is measured, not served.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inner = _Calibration(calibration_images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.inner.get_next()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    pruned = out_path.with_name(f".{out_path.stem}.logit.onnx")
    try:
        quantize_static(
            str(_logit_only(onnx_path, pruned)),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
        )
    finally:
        pruned.unlink(missing_ok=True)
    return out_path


def code_revision(repo: Path | None = None) -> str:
    """Returns the git commit of the code (``+dirty`` when the tree has changes), or ``unknown``."""
    cwd = str(repo or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ":(top)training", ":(top)moderation"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def write_version(
    *,
    model: DeepfakeDetector,
    model_dir: Path,
    version: int,
    metadata: contract.ModelMetadata,
    checkpoint: dict[str, Any],
    real_images: np.ndarray,
    overwrite: bool = False,
) -> tuple[Path, ParityReport]:
    """Exports, checks parity, then writes model.onnx + metadata.json + checkpoint.pt atomically."""
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass --overwrite or choose another version"
        )
    parities: list[ParityReport] = []

    def fill(folder: Path) -> contract.ModelMetadata:
        # Grad-CAM is written for the seed's feature map; another family (the residual
        # detector) is served with its logit only, like a version exported before maps.
        cam = isinstance(model, DeepfakeDetector)
        onnx_path = export_onnx(model, folder / contract.ONNX_FILENAME, cam=cam)
        session = onnx_session(onnx_path)
        parity = check_parity(model, lambda x: onnx_logits(session, x), real_images)
        parities.append(parity)
        extra = {
            **metadata.extra,
            "onnx_parity": parity.as_dict(),
            "onnx_opset": ONNX_OPSET,
        }
        if cam:
            extra["cam_parity"] = check_cam_parity(
                model, lambda x: onnx_cams(session, x), real_images
            )
        save_checkpoint(folder / CHECKPOINT_FILENAME, checkpoint)
        return dataclasses.replace(metadata, extra=extra)

    write_folder(model_dir, version, fill, overwrite=overwrite)
    logger.info("wrote model version %s", target)
    return target, parities[0]


def utc_now() -> str:
    """Returns the current UTC time as ISO 8601 (seconds)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()

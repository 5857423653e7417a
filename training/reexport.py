"""Re-export a model version from its own ``checkpoint.pt`` so it also serves the ``cam`` output.

Same weights, same number: the new graph must give the old logits within tolerance;
``metadata.json`` gains ``extra.reexport`` and ``extra.cam_parity``.
Usage: ``python -m training.reexport model_repository/deepfake_detector/1 [--images DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from moderation import contract
from moderation.preprocess import load_image_file
from training.checkpoint import model_from_checkpoint
from training.export import (
    CHECKPOINT_FILENAME,
    PARITY_TOLERANCE,
    ExportParityError,
    check_cam_parity,
    check_parity,
    code_revision,
    export_onnx,
    onnx_cams,
    onnx_logits,
    onnx_session,
    utc_now,
)

logger = logging.getLogger(__name__)


def _onnx_outputs(path: Path) -> list[str]:
    return [o.name for o in onnx_session(path, threads=1).get_outputs()]


ADDED_CAM = "added the cam output (Grad-CAM as forward operations); same weights"


def reexport_version(
    version_dir: Path, real_images: np.ndarray, *, why: str = ADDED_CAM
) -> dict[str, object]:
    """Replaces ``model.onnx`` with the graph the current code exports; returns the record.

    An earlier ``extra.reexport`` record is kept inside the new one as ``previous``.
    """
    version_dir = Path(version_dir)
    old_path = version_dir / contract.ONNX_FILENAME
    model, _state = model_from_checkpoint(version_dir / CHECKPOINT_FILENAME)
    new_path = version_dir / f".{contract.ONNX_FILENAME}.new"
    try:
        export_onnx(model, new_path)
        new = onnx_session(new_path)
        parity = check_parity(model, lambda x: onnx_logits(new, x), real_images)
        cam_parity = check_cam_parity(model, lambda x: onnx_cams(new, x), real_images)
        probe = np.concatenate([real_images, _random(8)])
        delta = float(
            np.max(np.abs(onnx_logits(onnx_session(old_path), probe) - onnx_logits(new, probe)))
        )
        if delta > PARITY_TOLERANCE:
            raise ExportParityError(
                f"the re-exported logits differ from {old_path.name} by {delta:.3g}; "
                f"expected at most {PARITY_TOLERANCE} (same weights)"
            )
        previous_outputs = _onnx_outputs(old_path)
        record: dict[str, object] = {
            "at": utc_now(),
            "code_revision": code_revision(),
            "why": why,
            "previous_outputs": previous_outputs,
            "logit_max_abs_vs_previous": delta,
            "samples": len(probe),
        }
        if contract.CAM_NAME in previous_outputs:
            old_cams = onnx_cams(onnx_session(old_path), probe)
            record["cam_max_abs_vs_previous"] = float(
                np.max(np.abs(old_cams - onnx_cams(new, probe)))
            )
        meta = contract.ModelMetadata.read(version_dir)
        if "reexport" in meta.extra:
            record["previous"] = meta.extra["reexport"]
        extra = {
            **meta.extra,
            "onnx_parity": parity.as_dict(),
            "cam_parity": cam_parity,
            "reexport": record,
        }
        os.replace(new_path, old_path)
        contract.ModelMetadata(**{**meta.__dict__, "extra": extra}).write(version_dir)
    finally:
        new_path.unlink(missing_ok=True)
    logger.info("re-exported %s with cam (logit delta %.2e)", version_dir, delta)
    return record


def _random(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, *contract.INPUT_SHAPE), dtype=np.uint8)


def _demo_images(folder: Path | None, count: int) -> np.ndarray:
    if folder is None:
        from training.demo_data import generate

        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp), per_class=max(1, count // 2), seed=1)
            return _demo_images(Path(tmp), count)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    return np.stack([load_image_file(str(p)) for p in files[:count]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--images", type=Path, default=None, help="real images (default: demo)")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    record = reexport_version(args.version_dir, _demo_images(args.images, args.count))
    print(record)


if __name__ == "__main__":
    main()

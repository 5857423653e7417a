"""The naive baseline for bench_pipeline: Flask's threaded dev server, eager PyTorch per request.

Loads :mod:`training.model` with version 1's ``checkpoint.pt`` and answers ``POST /score`` (raw
image bytes) with the logit, decoding with plain Pillow and running the model on one image per
request, no batching. Loopback only.

    python benchmarks/naive_server.py --port 18080
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import numpy as np
import torch
from flask import Flask, Response, jsonify, request
from PIL import Image

from moderation.contract import INPUT_SIZE
from moderation.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)
DEFAULT_CHECKPOINT = PROJECT_ROOT / "model_repository" / "deepfake_detector" / "1" / "checkpoint.pt"


def create_app(checkpoint: Path) -> Flask:
    """Returns the Flask app scoring one image per request with the checkpoint's model."""
    from training.checkpoint import model_from_checkpoint
    from training.model import ExportWrapper

    model, _ = model_from_checkpoint(checkpoint)
    wrapper = ExportWrapper(model).eval()
    app = Flask("naive")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(ok=True)

    @app.post("/score")
    def score() -> Response:
        image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
        array = np.asarray(image.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR))
        with torch.no_grad():
            logit = wrapper(torch.from_numpy(np.ascontiguousarray(array))[None])
        return jsonify(logit=float(logit[0, 0]))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    create_app(args.checkpoint).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()

"""The bundled Triton serves ``cam`` beside ``logit``; a version exported without it keeps working.

Both against the real bundled server: the committed repository (version 1 re-exported with
``cam``), and a private server whose repository holds an older-style version (its ONNX graph and
config.pbtxt name ``logit`` only), as any repository written before the output existed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from moderation import contract
from serving.client import TritonClient
from serving.server import TritonServer
from tests.fixtures.triton import private_server

pytestmark = pytest.mark.integration


def _images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *contract.INPUT_SHAPE), dtype=np.uint8)


def test_served_cam_equals_onnxruntime_in_process(triton_server: TritonServer) -> None:
    client = TritonClient(triton_server.grpc_url, timeout_s=30.0, batch_images=4)
    try:
        images = _images(5, seed=4)
        result = client.infer(images)
    finally:
        client.close()
    version_dir = triton_server.repository / contract.MODEL_NAME / result.model_version
    session = ort.InferenceSession(
        str(version_dir / contract.ONNX_FILENAME), providers=["CPUExecutionProvider"]
    )
    logits, cams = session.run(
        [contract.OUTPUT_NAME, contract.CAM_NAME], {contract.INPUT_NAME: images}
    )
    assert result.cams is not None and result.cams.shape == (5, *contract.CAM_SHAPE)
    assert np.max(np.abs(result.cams - cams)) <= 1e-5
    assert np.max(np.abs(result.logits - logits.reshape(5))) <= 1e-5
    assert result.cams.min() >= 0.0 and result.cams.max() <= 1.0


def _logit_only(repository: Path) -> None:
    """Turns the copy into a repository written before ``cam``: graph and config without it."""
    model_dir = repository / contract.MODEL_NAME
    path = model_dir / "1" / contract.ONNX_FILENAME
    model = onnx.load(str(path))
    kept = [o for o in model.graph.output if o.name != contract.CAM_NAME]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(path))
    config = model_dir / "config.pbtxt"
    text = re.sub(r",\s*\{\s*name: \"cam\"[^}]*\}", "", config.read_text())
    assert '"cam"' not in text
    config.write_text(text)


def test_version_without_cam__scores_as_before(tmp_path: Path) -> None:
    with private_server(tmp_path, prepare=_logit_only) as server:
        client = TritonClient(server.grpc_url, timeout_s=30.0)
        try:
            images = _images(3, seed=5)
            result = client.infer(images)
        finally:
            client.close()
        version_dir = server.repository / contract.MODEL_NAME / "1"
        session = ort.InferenceSession(
            str(version_dir / contract.ONNX_FILENAME), providers=["CPUExecutionProvider"]
        )
        (expected,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})
    assert result.cams is None and result.model_version == "1"
    assert np.max(np.abs(result.logits - expected.reshape(3))) <= 1e-5

"""The bundled backend's opt-in TorchScript path serves what the ONNX path serves.

A private bundled server whose config names ``model.pt`` (version 1's checkpoint traced with the
served graph, fp32 on the CPU) answers ``logit`` and ``cam`` equal, within float tolerance, to
onnxruntime running the committed ``model.onnx``. The copy's ``model.onnx`` is overwritten with
bytes that are no ONNX graph, so an answer at all shows the server did not take the ONNX path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from moderation import contract
from serving.client import TritonClient
from tests.fixtures.triton import COMMITTED_REPOSITORY, private_server
from training.cam import CamExportWrapper
from training.checkpoint import model_from_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VERSION_DIR = COMMITTED_REPOSITORY / contract.MODEL_NAME / "1"
TOLERANCE = 1e-4  # fp32 in two runtimes; export parity on these weights is about 2e-5


def _serve_torchscript(repository: Path) -> None:
    model_dir = repository / contract.MODEL_NAME
    version = model_dir / "1"
    wrapper = CamExportWrapper(model_from_checkpoint(VERSION_DIR / "checkpoint.pt")[0].eval())
    example = torch.zeros((2, *contract.INPUT_SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper.eval(), (example,))
    names = f"{contract.OUTPUT_NAME},{contract.CAM_NAME}"
    torch.jit.save(traced, str(version / "model.pt"), _extra_files={"output_names": names})
    (version / contract.ONNX_FILENAME).write_bytes(b"not an ONNX graph")
    config = model_dir / "config.pbtxt"
    text, found = re.subn(
        r'^backend: "onnxruntime"$',
        'backend: "onnxruntime"\ndefault_model_filename: "model.pt"',
        config.read_text(),
        flags=re.M,
    )
    assert found == 1
    config.write_text(text)


def test_torchscript_path_serves_logit_and_cam_as_the_onnx_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, size=(5, *contract.INPUT_SHAPE), dtype=np.uint8)
    with private_server(tmp_path, prepare=_serve_torchscript) as server:
        client = TritonClient(server.grpc_url, timeout_s=60.0, batch_images=4)  # 4 + 1 images
        try:
            result = client.infer(images)
        finally:
            client.close()
    session = ort.InferenceSession(
        str(VERSION_DIR / contract.ONNX_FILENAME), providers=["CPUExecutionProvider"]
    )
    logits, cams = session.run(
        [contract.OUTPUT_NAME, contract.CAM_NAME], {contract.INPUT_NAME: images}
    )
    assert result.model_version == "1"
    assert result.logits.dtype == np.float32 and result.logits.shape == (5,)
    assert np.max(np.abs(result.logits - logits.reshape(5))) <= TOLERANCE
    assert result.cams is not None and result.cams.shape == (5, *contract.CAM_SHAPE)
    assert result.cams.dtype == np.float32
    assert np.max(np.abs(result.cams - cams)) <= TOLERANCE

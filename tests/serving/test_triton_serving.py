"""The bundled Triton serves the committed repository: parity, batching, readiness, errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from moderation import contract
from serving.client import InferenceUnavailable, TritonClient
from serving.env import free_ports
from serving.server import TritonServer

pytestmark = pytest.mark.integration


def _images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *contract.INPUT_SHAPE), dtype=np.uint8)


def _in_process_logits(version_dir: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(version_dir / contract.ONNX_FILENAME), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})
    return np.asarray(logits, dtype=np.float32).reshape(len(images))


@pytest.fixture()
def client(triton_server: TritonServer):
    client = TritonClient(triton_server.grpc_url, timeout_s=30.0)
    yield client
    client.close()


def test_grpc_scores_equal_onnxruntime_in_process(triton_server: TritonServer, client) -> None:
    images = np.concatenate([_images(7, seed=1), np.zeros((1, *contract.INPUT_SHAPE), np.uint8)])
    result = client.infer(images)
    version_dir = triton_server.repository / contract.MODEL_NAME / result.model_version
    expected = _in_process_logits(version_dir, images)
    assert result.logits.dtype == np.float32 and result.logits.shape == (8,)
    assert np.max(np.abs(result.logits - expected)) <= 1e-5
    assert result.model_name == contract.MODEL_NAME
    assert result.model_version == max(triton_server.serving_versions(), key=int)


def test_batches_larger_than_max_batch_size_are_split(client) -> None:
    images = _images(40, seed=2)  # config max_batch_size is 32
    whole = client.infer(images).logits
    parts = np.concatenate([client.infer(images[:20]).logits, client.infer(images[20:]).logits])
    assert whole.shape == (40,)
    assert np.max(np.abs(whole - parts)) <= 1e-5


def _batch_counts(server: TritonServer) -> dict[int, int]:
    stats = server.statistics()["model_stats"]
    counts: dict[int, int] = {}
    for version_stats in stats:
        for entry in version_stats.get("batch_stats", []):
            size = int(entry["batch_size"])
            counts[size] = counts.get(size, 0) + int(entry["compute_infer"]["count"])
    return counts


def test_concurrent_single_image_requests_form_batches(triton_server: TritonServer) -> None:
    before = _batch_counts(triton_server)
    image = _images(1, seed=3)
    errors: list[BaseException] = []

    def send() -> None:
        local = TritonClient(triton_server.grpc_url, timeout_s=30.0)
        try:
            for _ in range(6):
                local.infer(image)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            local.close()

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    deadline = time.monotonic() + 10
    while True:  # Triton records an execution's statistics just after its responses are sent
        after = _batch_counts(triton_server)
        grown = {size: after[size] - before.get(size, 0) for size in after}
        if sum(size * n for size, n in grown.items()) >= 72 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sum(size * n for size, n in grown.items()) >= 72, grown
    assert any(size > 1 and n > 0 for size, n in grown.items()), grown


def test_readiness(triton_server: TritonServer, client) -> None:
    assert client.is_ready()
    assert TritonClient(f"127.0.0.1:{free_ports(1)[0]}").is_ready() is False


def test_closed_port_raises_inference_unavailable_quickly() -> None:
    port = free_ports(1)[0]
    client = TritonClient(f"127.0.0.1:{port}", timeout_s=2.0, retries=3, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(InferenceUnavailable, match=r"after 4 attempts"):
        client.infer(_images(1, seed=4))
    assert time.monotonic() - started < 5.0


def test_wrong_input_is_refused_before_sending(client) -> None:
    with pytest.raises(ValueError, match="expected images uint8"):
        client.infer(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        client.infer(np.zeros((1, *contract.INPUT_SHAPE), np.float32))


def test_joined_concurrent_scorings_get_the_scores_of_their_own_images(
    triton_server: TritonServer,
) -> None:
    """Worker threads sharing one joining client: every image gets its own in-process score."""
    images = _images(48, seed=5)
    version_dir = triton_server.repository / contract.MODEL_NAME / "1"
    expected = _in_process_logits(version_dir, images)
    joined = TritonClient(triton_server.grpc_url, timeout_s=30.0, batch_images=8)
    got = np.full(len(images), np.nan, dtype=np.float32)
    errors: list[Exception] = []

    def score(indices: range) -> None:
        try:
            for i in indices:
                got[i] = joined.infer(images[i : i + 1]).logits[0]
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=score, args=(range(k, 48, 8),)) for k in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        joined.close()
    assert not errors and not any(t.is_alive() for t in threads)
    assert np.max(np.abs(got - expected)) <= 1e-4

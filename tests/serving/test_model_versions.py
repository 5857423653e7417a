"""A new model version loads while requests flow; a stopped server is reported, not hung on.

These tests run their own server (not the shared session one) because they add a version to its
repository and stop it at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from moderation import contract
from serving.client import InferenceResult, InferenceUnavailable, TritonClient
from serving.server import TritonServer
from tests.fixtures.triton import private_server
from tests.fixtures.waiting import wait_until
from tests.serving.onnx_edit import add_shifted_version

pytestmark = pytest.mark.integration

SHIFT = 3.0


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with private_server(tmp_path_factory.mktemp("triton-versions")) as server:
        yield server


class _Load:
    """Background senders recording every answer with the time it was asked, until stopped."""

    def __init__(self, url: str, image: np.ndarray, threads: int) -> None:
        self.answers: list[tuple[float, InferenceResult]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._image = image
        self._threads = [threading.Thread(target=self._run, args=(url,)) for _ in range(threads)]

    def _run(self, url: str) -> None:
        client = TritonClient(url, timeout_s=30.0)
        try:
            while not self._stop.is_set():
                sent_at = time.monotonic()
                self.answers.append((sent_at, client.infer(self._image)))
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            client.close()

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _model_dir(server: TritonServer) -> Path:
    return server.repository / contract.MODEL_NAME


def test_new_version_loads_under_load_without_dropping_requests(own_server: TritonServer) -> None:
    image = np.random.default_rng(7).integers(0, 256, (1, *contract.INPUT_SHAPE), dtype=np.uint8)
    probe = TritonClient(own_server.grpc_url, timeout_s=30.0)
    old = probe.infer(image)
    with _Load(own_server.grpc_url, image, threads=4) as load:
        wait_until(lambda: len(load.answers) >= 4 or load.errors, timeout_s=30)  # under load
        new_version = add_shifted_version(_model_dir(own_server), delta=SHIFT)
        own_server.load_model()
        loaded_at = time.monotonic()
        wait_until(  # answers to requests sent once load_model returned
            lambda: load.errors or sum(t > loaded_at for t, _ in load.answers) >= 4,
            timeout_s=30,
            message=lambda: f"{len(load.answers)} answers, none asked after the load",
        )
    assert not load.errors, load.errors
    assert own_server.serving_versions() == [str(new_version)]
    before = [r for t, r in load.answers if t < loaded_at]
    after = [r for t, r in load.answers if t > loaded_at]  # asked after load_model returned
    assert before and after
    assert {r.model_version for r in after} == {str(new_version)}
    for _, result in load.answers:
        shift = SHIFT if result.model_version == str(new_version) else 0.0
        assert result.model_version in (old.model_version, str(new_version))
        assert abs(float(result.logits[0]) - float(old.logits[0]) - shift) <= 1e-4
    assert abs(float(probe.infer(image).logits[0]) - float(old.logits[0]) - SHIFT) <= 1e-4
    probe.close()


def test_stopped_server_raises_inference_unavailable(own_server: TritonServer) -> None:
    client = TritonClient(own_server.grpc_url, timeout_s=2.0, retries=2, backoff_s=0.05)
    image = np.zeros((1, *contract.INPUT_SHAPE), np.uint8)
    assert client.infer(image).logits.shape == (1,)
    own_server.stop()
    started = time.monotonic()
    with pytest.raises(InferenceUnavailable, match=r"did not answer .* after 3 attempts"):
        client.infer(image)
    assert time.monotonic() - started < 5.0
    assert client.is_ready() is False
    client.close()

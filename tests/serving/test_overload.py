"""The bounded queue refuses overload at once, and the client treats that refusal as retryable."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from moderation import contract
from serving.client import TritonClient, is_retryable
from serving.server import TritonServer
from tests.fixtures.triton import private_server

pytestmark = pytest.mark.integration

QUEUE = 2


def _lower_queue(repository: Path) -> None:
    config = repository / contract.MODEL_NAME / "config.pbtxt"
    text, count = re.subn(r"max_queue_size: \d+", f"max_queue_size: {QUEUE}", config.read_text())
    assert count == 1, "config.pbtxt is expected to bound its queue with max_queue_size"
    config.write_text(text)


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The committed config with only max_queue_size lowered, so overload is easy to cause."""
    with private_server(tmp_path_factory.mktemp("triton-overload"), prepare=_lower_queue) as server:
        yield server


def test_overload_is_refused_immediately_and_is_retryable(small_queue_server) -> None:
    client = grpcclient.InferenceServerClient(small_queue_server.grpc_url)
    images = np.zeros((8, *contract.INPUT_SHAPE), np.uint8)
    outcomes: list[tuple[float, InferenceServerException | None]] = []
    done = threading.Semaphore(0)
    sent_at = time.monotonic()

    def callback(result: object, error: InferenceServerException | None) -> None:
        outcomes.append((time.monotonic() - sent_at, error))
        done.release()

    for _ in range(40):
        tensor = grpcclient.InferInput(contract.INPUT_NAME, list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        client.async_infer(contract.MODEL_NAME, [tensor], callback)
    for _ in range(40):
        assert done.acquire(timeout=120)
    client.close()
    refused = [(t, e) for t, e in outcomes if e is not None]
    assert refused, "40 requests of 8 images against a queue of 2 must overflow it"
    assert len(refused) < 40
    assert all("maximum queue size" in str(e.message()) for _, e in refused)
    assert all(is_retryable(e) for _, e in refused if e is not None)
    assert min(t for t, _ in refused) < 1.0  # refused on arrival, not after waiting


def test_client_rides_out_short_overload(small_queue_server) -> None:
    image = np.zeros((1, *contract.INPUT_SHAPE), np.uint8)
    errors: list[BaseException] = []

    def send() -> None:
        client = TritonClient(small_queue_server.grpc_url, retries=8, backoff_s=0.05)
        try:
            for _ in range(3):
                client.infer(image)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

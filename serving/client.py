"""Inference over gRPC: :class:`TritonClient` with deadlines, retries, readiness and versions.

Tensor names and the batch limit come from the served model's metadata and config, the answering
version from each response; after the last retry callers get :class:`InferenceUnavailable`.
Concurrent calls of one process may be joined into one request (:class:`_Joiner`). Design and
measurements: docs/design.md, "Serving".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from moderation import contract
from moderation.settings import Settings

logger = logging.getLogger(__name__)

# gRPC codes worth another try: server down or restarting, queue full, deadline hit under load.
_RETRYABLE = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.CANCELLED",
}
# Triton answers some transient states with other codes; these messages are transient too.
_TRANSIENT_MESSAGES = ("exceeds maximum queue size", "is not ready", "unavailable", "timeout")


class InferenceUnavailable(RuntimeError):
    """Triton could not answer after all retries (down, overloaded, or the model not ready)."""


@dataclass(frozen=True)
class InferenceResult:
    """Logits for a batch, the model version that produced them, and its Grad-CAM maps."""

    logits: np.ndarray  # float32, shape [N]
    model_name: str
    model_version: str
    cams: np.ndarray | None = None  # float32 [N, 7, 7]; None when the version has no ``cam``

    def rows(self, start: int, end: int) -> InferenceResult:
        """Returns the result for images ``start:end`` of the batch."""
        cams = None if self.cams is None else self.cams[start:end]
        return InferenceResult(self.logits[start:end], self.model_name, self.model_version, cams)


@dataclass(frozen=True)
class _ModelInfo:
    input_name: str
    output_name: str
    max_batch_size: int
    instances: int = 1  # model instances in the configuration's instance groups
    cam_name: str | None = None  # the Grad-CAM output, when the served model has one
    size: int = contract.INPUT_SIZE  # the input's square side (an imported model's own)


@dataclass
class _Waiting:
    """One caller's images waiting to be sent, and then its share of the answer."""

    images: np.ndarray
    wake: threading.Event = field(default_factory=threading.Event)
    taken: bool = False  # in a request (its own or another caller's)
    finished: bool = False
    result: InferenceResult | None = None
    error: BaseException | None = None


class _Joiner:
    """Joins the requests of one process's threads into one Triton request while one is in flight.

    Leader/follower, as a database's group commit: a caller finding fewer than ``in_flight()``
    requests in flight (Triton's model instances) sends its images at once (no added delay while
    the server has an idle instance); callers arriving while every instance is busy queue, and
    when a request returns the first of them sends everything queued (up to ``max_images``, in
    arrival order) as one batch. Under load the batch grows with the time a request takes, so
    Triton's batcher receives batches instead of single images; each caller gets its own rows of
    the logits and the version that answered the whole batch. An error (``InferenceUnavailable``
    after the retries) is every caller's error.
    """

    def __init__(
        self,
        send: Callable[[np.ndarray], InferenceResult],
        max_images: int,
        in_flight: Callable[[], int] = lambda: 1,
        on_joined: Callable[[int], None] | None = None,
    ) -> None:
        self._send = send
        self.max_images = max_images
        self._in_flight = in_flight
        self._on_joined = on_joined
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._busy = 0  # requests in flight

    def infer(self, images: np.ndarray) -> InferenceResult:
        limit = max(1, self._in_flight())  # may ask the server first: before anything is queued
        mine = _Waiting(images)
        with self._lock:
            self._queue.append(mine)
        while True:
            with self._lock:
                if mine.finished:
                    break
                # A caller whose images another leader took waits for that request instead.
                lead = not mine.taken and self._busy < limit
                if lead:
                    batch = self._take()
                    self._busy += 1
                else:
                    mine.wake.clear()
            if not lead:
                mine.wake.wait()
                continue
            try:
                self._run(batch)
            finally:
                with self._lock:
                    self._busy -= 1
                    if self._queue:
                        self._queue[0].wake.set()  # the next leader
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _take(self) -> list[_Waiting]:
        """Pops the oldest queued callers, up to ``max_images`` (the queue is not empty)."""
        batch = [self._queue.popleft()]
        rows = len(batch[0].images)
        while self._queue and rows + len(self._queue[0].images) <= self.max_images:
            rows += len(self._queue[0].images)
            batch.append(self._queue.popleft())
        for waiting in batch:
            waiting.taken = True
        return batch

    def _run(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                results = [self._send(batch[0].images)]
            else:
                joined = self._send(np.concatenate([w.images for w in batch]))
                results, start = [], 0
                for waiting in batch:
                    end = start + len(waiting.images)
                    results.append(joined.rows(start, end))
                    start = end
            if self._on_joined is not None:
                self._on_joined(sum(len(w.images) for w in batch))
            for waiting, result in zip(batch, results, strict=True):
                waiting.result = result
        except Exception as exc:
            for waiting in batch:
                waiting.error = exc
        except BaseException as exc:  # the leader's own interruption; the others are told so
            for waiting in batch:
                waiting.error = InferenceUnavailable(f"the request was interrupted: {exc!r}")
            raise
        finally:
            with self._lock:
                for waiting in batch:
                    waiting.finished = True
                    waiting.wake.set()


class TritonClient:
    """A gRPC client for one model, safe to share between threads of one process.

    With ``batch_images`` > 1, concurrent :meth:`infer` calls of up to that many images are joined
    while a request is in flight (:class:`_Joiner`); larger calls (a video's frames) go alone.
    ``on_joined`` is told the images of each joined request (the worker's metric).
    """

    def __init__(
        self,
        url: str,
        *,
        model_name: str = contract.MODEL_NAME,
        timeout_s: float = 10.0,
        retries: int = 4,
        backoff_s: float = 0.2,
        batch_images: int = 1,
        on_joined: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self._info: _ModelInfo | None = None
        self._lock = threading.Lock()
        self._joiner = (
            _Joiner(self._infer, batch_images, lambda: self._model_info().instances, on_joined)
            if batch_images > 1
            else None
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_joined: Callable[[int], None] | None = None
    ) -> TritonClient:
        """Returns a client configured from settings."""
        return cls(
            settings.triton_grpc_url,
            model_name=settings.model_name,
            timeout_s=settings.triton_timeout_s,
            retries=settings.triton_retries,
            batch_images=settings.triton_batch_images,
            on_joined=on_joined,
        )

    def is_ready(self) -> bool:
        """Returns whether the server is live and the model ready; never raises."""
        try:
            return bool(
                self._client.is_server_live(client_timeout=2.0)
                and self._client.is_model_ready(self.model_name, client_timeout=2.0)
            )
        except Exception:  # readiness is a yes/no question; the reason goes to the log
            logger.debug("Triton at %s not ready", self.url, exc_info=True)
            return False

    def serving_versions(self) -> list[str]:
        """Returns the versions of the model that Triton serves now."""
        metadata = self._call(
            lambda: self._client.get_model_metadata(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            )
        )
        return [str(v) for v in metadata.get("versions", [])]

    def infer(self, images: np.ndarray) -> InferenceResult:
        """Returns the logits for images uint8 [N, 224, 224, 3] and the version that answered.

        Batches larger than the model's ``max_batch_size`` are split; every part must be answered
        by the same version, otherwise the whole batch is asked again (a deploy happened midway).
        """
        images = _check_images(images, self._model_info().size)
        if self._joiner is not None and len(images) <= self._joiner.max_images:
            return self._joiner.infer(images)
        return self._infer(images)

    def _infer(self, images: np.ndarray) -> InferenceResult:
        info = self._model_info()
        for _ in range(3):
            parts = []
            for start in range(0, len(images), info.max_batch_size):
                parts.append(self._infer_chunk(images[start : start + info.max_batch_size], info))
            versions = {part.model_version for part in parts}
            if len(versions) == 1:
                cams = [part.cams for part in parts]
                return InferenceResult(
                    np.concatenate([part.logits for part in parts]),
                    self.model_name,
                    versions.pop(),
                    None if any(c is None for c in cams) else np.concatenate(cams),  # type: ignore[arg-type]
                )
            logger.info("versions %s answered one batch; asking again", sorted(versions))
        raise InferenceUnavailable(f"{self.model_name} kept changing version during one batch")

    def close(self) -> None:
        """Closes the gRPC channel."""
        self._client.close()

    # -- internals -------------------------------------------------------------------------

    def _infer_chunk(self, chunk: np.ndarray, info: _ModelInfo) -> InferenceResult:
        tensor = grpcclient.InferInput(info.input_name, list(chunk.shape), "UINT8")
        tensor.set_data_from_numpy(chunk)
        names = [info.output_name] + ([info.cam_name] if info.cam_name else [])
        wanted = [grpcclient.InferRequestedOutput(name) for name in names]
        result = self._call(
            lambda: self._client.infer(
                self.model_name, [tensor], outputs=wanted, client_timeout=self.timeout_s
            )
        )
        logits = result.as_numpy(info.output_name)
        if logits is None or logits.shape[0] != len(chunk):
            shape = None if logits is None else logits.shape
            raise InferenceUnavailable(
                f"{self.model_name} answered {shape} for {len(chunk)} images; expected [N, 1]"
            )
        version = str(result.get_response().model_version)
        logits = logits.reshape(len(chunk)).astype(np.float32, copy=False)
        cams = result.as_numpy(info.cam_name) if info.cam_name else None
        if cams is not None and cams.shape != (len(chunk), *contract.CAM_SHAPE):
            logger.warning("%s answered cam %s; expected [N, 7, 7], ignored", version, cams.shape)
            cams = None
        return InferenceResult(logits, self.model_name, version, cams)

    def _model_info(self) -> _ModelInfo:
        with self._lock:
            if self._info is None:
                self._info = self._fetch_model_info()
            return self._info

    def _fetch_model_info(self) -> _ModelInfo:
        metadata = self._call(
            lambda: self._client.get_model_metadata(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            )
        )
        config = self._call(
            lambda: self._client.get_model_config(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            )
        )
        inputs, outputs = metadata.get("inputs", []), metadata.get("outputs", [])
        names = [str(o.get("name")) for o in outputs]
        # One output (whatever its name) is the logit of a version without maps; with more, the
        # contract's names decide.
        logit = names[0] if len(names) == 1 else contract.OUTPUT_NAME
        if len(inputs) != 1 or inputs[0].get("datatype") != "UINT8" or logit not in names:
            raise InferenceUnavailable(
                f"{self.model_name} has inputs {inputs} and outputs {outputs}; expected one UINT8 "
                f"input {contract.INPUT_NAME!r}, an FP32 output {contract.OUTPUT_NAME!r} and "
                f"optionally {contract.CAM_NAME!r}"
            )
        cam = contract.CAM_NAME if contract.CAM_NAME in names and len(names) > 1 else None
        max_batch = int(config.get("config", {}).get("max_batch_size", 0)) or 1
        groups = config.get("config", {}).get("instance_group", [])
        instances = sum(int(group.get("count", 1)) for group in groups) or 1
        shape = [int(d) for d in inputs[0].get("shape", [])]
        size = shape[-2] if len(shape) == 4 else contract.INPUT_SIZE
        info = _ModelInfo(inputs[0]["name"], logit, max_batch, instances, cam, size)
        logger.info("Triton %s serves %s: %s", self.url, self.model_name, info)
        return info

    def _call(self, request: Any) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return request()
            except InferenceServerException as exc:
                if not is_retryable(exc):
                    raise InferenceUnavailable(
                        f"Triton at {self.url} refused the request for {self.model_name}: {exc}"
                    ) from exc
                last: Exception = exc
            if attempt < self.retries:
                logger.info("Triton %s: %s; retry %d in %.2fs", self.url, last, attempt + 1, delay)
                time.sleep(delay)
                delay *= 2
        raise InferenceUnavailable(
            f"Triton at {self.url} did not answer for {self.model_name} after "
            f"{self.retries + 1} attempts: {last}"
        ) from last


def is_retryable(exc: InferenceServerException) -> bool:
    """Returns whether Triton's error is transient (down, overloaded, not ready, too slow)."""
    if str(exc.status()) in _RETRYABLE:
        return True
    message = str(exc.message() or "").lower()
    return any(fragment in message for fragment in _TRANSIENT_MESSAGES)


def _check_images(images: np.ndarray, size: int = contract.INPUT_SIZE) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    # The contract's 224 x 224, or an imported model's own size (moderation.model_import).
    if array.ndim != 4 or tuple(array.shape[1:]) != (size, size, 3) or len(array) == 0:
        raise ValueError(
            f"expected images uint8 [N, {size}, {size}, 3] with N >= 1; "
            f"got {array.dtype} {list(array.shape)}"
        )
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (0..255); got {array.dtype}")
    return np.ascontiguousarray(array)


_clients: dict[tuple[int, str, str], TritonClient] = {}
_clients_lock = threading.Lock()


def get_client(
    settings: Settings, *, on_joined: Callable[[int], None] | None = None
) -> TritonClient:
    """Returns this process's client for the settings' Triton (a fork gets a fresh channel)."""
    key = (os.getpid(), settings.triton_grpc_url, settings.model_name)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = TritonClient.from_settings(settings, on_joined=on_joined)
            _clients[key] = client
        return client

"""Every enabled model of a tenant in one round: concurrent Triton requests, one answer each.

:class:`ModelSet` keeps a client per model; a model that fails is reported missing and skipped for
``SKIP_AFTER_FAILURE_S``; only when none answers does the caller see ``InferenceUnavailable``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from prometheus_client import Counter, Histogram

from moderation.ensemble import ModelInfo, model_info, servable_models
from moderation.settings import Settings
from serving.client import InferenceUnavailable, TritonClient
from worker.metrics import BUCKETS, JOINED_IMAGES

# In this module rather than worker.metrics: one model's round is this module's business.
MODEL_SECONDS = Histogram(
    "dfmod_worker_model_seconds",
    "Time one model took to answer an item's request (the client's view: wire, queue, compute)",
    ["model"],
    buckets=BUCKETS,
)
MODEL_FAILURES = Counter(
    "dfmod_worker_model_failures_total",
    "Requests to one model that got no answer (the verdict came from the others, partial)",
    ["model"],
)

logger = logging.getLogger(__name__)

SKIP_AFTER_FAILURE_S = 10.0
LIST_TTL_S = 10.0


@dataclass(frozen=True)
class ModelAnswer:
    """One model's answer for an item (``logits`` None when it failed or was skipped)."""

    name: str
    version: str | None
    logits: np.ndarray | None
    latency_ms: float
    error: str | None = None
    cams: np.ndarray | None = None  # the Grad-CAM maps, when the version serves them


class ModelSet:
    """The worker process's clients, one per model, and the round that asks them all."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[str], TritonClient] | None = None,
        *,
        threads: int = 4,
    ) -> None:
        self.settings = settings
        self._factory = client_factory or self._client_for
        self._clients: dict[str, TritonClient] = {}
        self._skip_until: dict[str, float] = {}
        self._last_errors: dict[str, InferenceUnavailable] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dfmod-models")
        self._listed: tuple[float, list[str]] = (0.0, [])

    def _client_for(self, name: str) -> TritonClient:
        s = self.settings
        return TritonClient(
            s.triton_grpc_url,
            model_name=name,
            timeout_s=s.triton_timeout_s,
            retries=s.triton_retries,
            batch_images=s.triton_batch_images,
            on_joined=JOINED_IMAGES.observe,
        )

    def client(self, name: str) -> TritonClient:
        """Returns (creating once) the client of one model."""
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = self._factory(name)
            return client

    def enabled(self, tenant_models: list[str] | None) -> list[str]:
        """Returns the models to ask: the tenant's list, else DFMOD_MODELS, else every servable
        model of the repository; the primary model (DFMOD_MODEL_NAME) first when present."""
        names = tenant_models or [m.strip() for m in self.settings.models.split(",") if m.strip()]
        if not names:
            names = self._repository_models()
        primary = self.settings.model_name
        return sorted(dict.fromkeys(names), key=lambda n: (n != primary, n))

    def _repository_models(self) -> list[str]:
        now = time.monotonic()
        listed_at, names = self._listed
        if now - listed_at > LIST_TTL_S or not names:
            names = servable_models(Path(self.settings.model_repository))
            names = names or [self.settings.model_name]
            self._listed = (now, names)
        return names

    def info(self, name: str) -> ModelInfo | None:
        """Returns a model's newest version's info from the repository, None if it has none."""
        try:
            return model_info(Path(self.settings.model_repository), name)
        except (OSError, IndexError, ValueError):
            return None

    def infer(
        self, inputs: dict[str, np.ndarray], primary: TritonClient | None = None
    ) -> list[ModelAnswer]:
        """Asks every model in ``inputs`` (name -> uint8 [N, S, S, 3]) at once, in order; raises
        InferenceUnavailable only when none answers. ``primary`` answers for its own model."""
        now = time.monotonic()
        names = list(inputs)
        # A model that just failed is skipped while another one can answer; alone, it is asked.
        asked = [n for n in names if self._skip_until.get(n, 0.0) <= now] or names
        if len(asked) == 1:
            answers = {asked[0]: self._ask(asked[0], inputs[asked[0]], primary)}
        else:
            futures = {n: self._pool.submit(self._ask, n, inputs[n], primary) for n in asked}
            answers = {n: future.result() for n, future in futures.items()}
        result = [answers.get(n) or ModelAnswer(n, None, None, 0.0, "unavailable") for n in names]
        if not any(a.logits is not None for a in result):
            raise self._last_errors.get(names[0]) or InferenceUnavailable("no model answered")
        return result

    def _ask(self, name: str, images: np.ndarray, primary: TritonClient | None) -> ModelAnswer:
        start = time.perf_counter()
        client = primary if primary is not None and name == self.settings.model_name else None
        try:
            result = (client or self.client(name)).infer(images)
        except SoftTimeLimitExceeded:  # the task's own time limit, not the model's failure
            raise
        except Exception as exc:  # one model's failure is reported, never the item's loss
            self._skip_until[name] = time.monotonic() + SKIP_AFTER_FAILURE_S
            self._last_errors[name] = (
                exc if isinstance(exc, InferenceUnavailable) else InferenceUnavailable(str(exc))
            )
            logger.warning("model %s did not answer: %s", name, exc)
            MODEL_FAILURES.labels(name).inc()
            latency = (time.perf_counter() - start) * 1000
            kind = "unavailable" if isinstance(exc, InferenceUnavailable) else "error"
            return ModelAnswer(name, None, None, latency, kind)
        self._skip_until.pop(name, None)
        latency = (time.perf_counter() - start) * 1000
        MODEL_SECONDS.labels(name).observe(latency / 1000)
        return ModelAnswer(
            name, str(result.model_version), result.logits, latency, cams=result.cams
        )

    def close(self) -> None:
        """Closes every client and the thread pool."""
        self._pool.shutdown(wait=False)
        for client in self._clients.values():
            client.close()


_sets: dict[tuple[object, ...], ModelSet] = {}
_sets_lock = threading.Lock()


def get_model_set(settings: Settings) -> ModelSet:
    """Returns this process's model set for the settings' Triton (a fork gets its own)."""
    key = (
        os.getpid(),
        settings.triton_grpc_url,
        settings.model_repository,
        settings.models,
        settings.model_name,
    )
    with _sets_lock:
        found = _sets.get(key)
        if found is None:
            found = _sets[key] = ModelSet(settings)
        return found

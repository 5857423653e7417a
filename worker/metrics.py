"""Prometheus metrics of the worker: where a scoring's time goes, stage by stage.

Wall and CPU time per stage, the queue waits and Triton batch sizes; exposition is off unless
``DFMOD_WORKER_METRICS_PORT`` is set, then :func:`serve` starts ``/metrics`` in the main process
(docs/performance.md, "Where a submission's time goes").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from moderation.settings import Settings

logger = logging.getLogger(__name__)

STAGES = (
    "queue",
    "blob",
    "provenance",
    "decode",
    "resize",
    "hash",
    "match",
    "inference",
    "database",
    "callback",
    "callback_queue",
)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

STAGE_SECONDS = Histogram(
    "dfmod_worker_stage_seconds",
    "Time spent per stage of the worker's work on one submission",
    ["stage"],
    buckets=BUCKETS,
)

STAGE_CPU_SECONDS = Counter(
    "dfmod_worker_stage_cpu_seconds",
    "CPU time of the working thread per stage of the worker's work on one submission",
    ["stage"],
)

JOINED_IMAGES = Histogram(
    "dfmod_worker_triton_request_images",
    "Images per Triton request of joined scorings (serving.client, triton_batch_images)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Times the block into ``dfmod_worker_stage_seconds{stage=name}`` and its thread's CPU time
    into ``dfmod_worker_stage_cpu_seconds_total{stage=name}`` (errors included)."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)
        STAGE_CPU_SECONDS.labels(name).inc(time.thread_time() - cpu_started)


def observe_since(name: str, then: dt.datetime | None) -> None:
    """Records the time from ``then`` (naive = UTC, as SQLite returns it) until now as a stage."""
    if then is None:
        return
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.timezone.utc)
    waited = (dt.datetime.now(dt.timezone.utc) - then).total_seconds()
    STAGE_SECONDS.labels(name).observe(max(waited, 0.0))


def serve(settings: Settings) -> None:
    """Starts ``/metrics`` on the configured host and port (all processes of this worker)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
        )
    except OSError as exc:  # metrics must never stop the worker from working
        logger.warning(
            "worker metrics not served on %s:%d: %s",
            settings.worker_metrics_host,
            settings.worker_metrics_port,
            exc,
        )
        return
    logger.info(
        "worker metrics on http://%s:%d/metrics",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )

"""Prometheus metrics of the API: requests by route and status, latency, submissions by status.

One registry per application; the by-status gauge is read from the database at scrape time; with
``PROMETHEUS_MULTIPROC_DIR`` every gunicorn worker answers with the same totals.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from moderation.db import session_scope
from moderation.submissions import count_by_status

logger = logging.getLogger(__name__)

# Process-wide counters incremented by the submissions blueprint (one per process is enough).
_PROCESS_REGISTRY = CollectorRegistry()
SUBMISSIONS_ACCEPTED = Counter(
    "dfmod_api_submissions_accepted",
    "Submissions accepted (202) by media kind",
    ["kind"],
    registry=_PROCESS_REGISTRY,
)
ENQUEUE_FAILURES = Counter(
    "dfmod_api_enqueue_failures",
    "Submissions accepted while the broker was unreachable (left for the sweeper)",
    registry=_PROCESS_REGISTRY,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SubmissionsByStatus(Collector):
    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dfmod_submissions", "Submissions in the database by status", labels=["status"]
        )
        try:
            with self.app.app_context():
                from webhook_api.state import state

                with session_scope(state().session_factory, read_only=True) as session:
                    counts = count_by_status(session=session)
        except Exception:
            logger.warning("could not count submissions for /metrics", exc_info=True)
            return
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


class ApiMetrics:
    """The per-application registry and its request hooks (tests build many apps in one process)."""

    def __init__(self, app: Flask) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dfmod_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dfmod_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=self.registry,
        )
        self.submissions = _SubmissionsByStatus(app)
        self.registry.register(self.submissions)
        app.before_request(self._start)
        app.after_request(self._record)

    def _start(self) -> None:
        g.metrics_start = time.perf_counter()

    def _record(self, response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_start")
        if started is not None:
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    def render(self) -> Response:
        """Returns the exposition of this app's and the process's (or all workers') metrics."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self.submissions)
            return Response(generate_latest(registry), content_type=CONTENT_TYPE)
        body = generate_latest(self.registry) + generate_latest(_PROCESS_REGISTRY)
        return Response(body, content_type=CONTENT_TYPE)

"""``dfmod worker``, ``dfmod beat`` and ``dfmod sweep``: the Celery processes from the command line.

The worker defaults to the threads pool on the embedded stack and to prefork elsewhere;
``--beat`` embeds the sweeper's scheduler as a thread (what ``dfmod up`` does).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from moderation.scratch import scratch_dir
from moderation.settings import Settings, load_settings

logger = logging.getLogger(__name__)

POOLS = ("prefork", "threads", "solo")
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
THREADS_DEFAULT_CONCURRENCY = 4


def default_pool(settings: Settings) -> str:
    """Returns the pool that suits the configured broker and database."""
    embedded = settings.resolved_broker_url.startswith("sqla+sqlite") or (
        settings.resolved_database_url.startswith("sqlite")
    )
    return "threads" if embedded else "prefork"


def worker_argv(
    settings: Settings, *, pool: str | None, concurrency: int | None, loglevel: str
) -> list[str]:
    """Returns the ``celery worker`` arguments dfmod runs with (beat is not one: see
    :func:`embed_beat`)."""
    pool = pool or default_pool(settings)
    if pool == "prefork" and settings.resolved_broker_url.startswith("sqla+sqlite"):
        raise click.UsageError(
            "the embedded SQLite broker cannot serve the prefork pool (its connections must not "
            "cross a fork); expected --pool threads or solo, or a Redis DFMOD_BROKER_URL"
        )
    if concurrency is None and pool == "threads":
        concurrency = THREADS_DEFAULT_CONCURRENCY
    # Gossip, mingle and remote control need broadcast exchanges the SQLAlchemy transport lacks;
    # dfmod uses none of them.
    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", "--without-gossip"]
    argv += ["--without-mingle", "--without-heartbeat"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    return argv


def embed_beat(app: Any, settings: Settings) -> None:
    """Runs the periodic scheduler (the sweeper's clock) in a thread of this worker (``--beat``).

    Celery's own ``--beat`` forks a process from a worker that already has the broker open, and
    SQLite connections (the embedded broker's) must not cross a fork. A thread needs no fork and
    no second process; it starts when the worker is ready and stops with it.
    """
    from celery import signals
    from celery.beat import EmbeddedService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    service = EmbeddedService(app, thread=True, schedule_filename=str(schedule))

    def start(**_: Any) -> None:
        logger.info("beat: embedded scheduler thread starting (%s)", schedule)
        service.start()

    def stop(**_: Any) -> None:
        if service.is_alive():  # Service.stop waits for a loop that must have started
            service.stop()

    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)


def prepare_metrics(settings: Settings) -> Path | None:
    """Gives this worker a fresh multiprocess metrics folder when exposition is on; returns it.

    Runs before prometheus_client is imported in this process: it picks its value store at
    import, and the multiprocess store is what lets prefork children report to one ``/metrics``.
    """
    if settings.worker_metrics_port <= 0:
        return None
    where = scratch_dir(settings.data_dir)
    if where == settings.data_dir:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dfmod-worker-metrics-", dir=where))
    os.environ[METRICS_DIR_ENV] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def check_provenance_policy(settings: Settings) -> None:
    """Refuses to start on a DFMOD_PROVENANCE_POLICY that every scoring would reject."""
    from moderation.policy import PROVENANCE_POLICIES

    if settings.provenance_policy not in PROVENANCE_POLICIES:
        raise click.UsageError(
            f"DFMOD_PROVENANCE_POLICY={settings.provenance_policy!r}; "
            f"expected one of {', '.join(PROVENANCE_POLICIES)}"
        )


def stdout_to_stderr() -> None:
    """Points this process's standard output at standard error: Celery prints its banner and
    shutdown notices to ``sys.__stdout__``, and a long-running worker has no results to print,
    only logs (which go to standard error, ``dfmod --help``)."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


@click.command("worker")
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes/threads.")
@click.option("--pool", type=click.Choice(POOLS), default=None, help="Default: threads on SQLite.")
@click.option("--beat/--no-beat", default=False, help="Embed the periodic sweeper (one per site).")
@click.option(
    "-n", "--hostname", default=None, help="Celery node name, distinct per worker (name@host)."
)
def worker_command(
    concurrency: int | None, pool: str | None, beat: bool, hostname: str | None
) -> None:
    """Run a Celery worker: scoring, media fetches, callbacks (and the sweeper with --beat)."""
    settings = load_settings()
    check_provenance_policy(settings)
    metrics_dir = prepare_metrics(settings)

    from worker import heartbeat
    from worker.celery_app import create_celery
    from worker.tasks import register_tasks

    argv = worker_argv(settings, pool=pool, concurrency=concurrency, loglevel=settings.log_level)
    if hostname:
        argv.append(f"--hostname={hostname}")
    app = register_tasks(create_celery(settings))
    heartbeat.attach(app)
    if metrics_dir is not None:
        from worker.metrics import serve

        serve(settings)
    if beat:
        embed_beat(app, settings)
    logger.info("celery %s (broker %s)", " ".join(argv), _safe(settings.resolved_broker_url))
    stdout_to_stderr()
    app.worker_main(argv)


@click.command("beat")
def beat_command() -> None:
    """Run the Celery beat scheduler that enqueues the periodic sweeper (one per deployment)."""
    from worker.celery_app import create_celery

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery(settings)
    schedule = settings.data_dir.resolve() / "celerybeat-schedule"
    stdout_to_stderr()
    app.Beat(schedule=str(schedule), loglevel=settings.log_level).run()


@click.command("sweep")
def sweep_command() -> None:
    """Run the sweeper once, without beat: re-enqueue stuck jobs and due callbacks."""
    from worker.celery_app import create_celery
    from worker.deps import deps_for
    from worker.sweeper import sweep
    from worker.tasks import enqueue_sweep_result

    settings = load_settings()
    result = sweep(session_factory=deps_for(settings).session_factory, settings=settings)
    enqueue_sweep_result(create_celery(settings), result)
    click.echo(
        f"re-enqueued: fetch {len(result.fetch)}, score {len(result.score)}, "
        f"deliver {len(result.deliver)}; gave up on {len(result.gave_up)}"
    )


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url.replace("sqla+", "", 1)).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]

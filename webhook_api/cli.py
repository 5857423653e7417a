"""``dfmod api``, ``dfmod migrate`` and ``dfmod tenant create``: running and administering the API.

``dfmod api`` serves :func:`webhook_api.create_app` with gunicorn's threaded workers; each worker
process builds its own app, engine and connections after the fork (nothing is preloaded).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, TypeVar

import click

from moderation.api_schema import (
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_REQUEST_LINE_BYTES,
)
from moderation.db import cli_transaction
from moderation.scratch import scratch_dir
from moderation.settings import Settings, load_settings

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)
T = TypeVar("T")


def gunicorn_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Returns gunicorn settings for the API (bind address, gthread workers, logging)."""
    scratch = scratch_dir()  # the workers' heartbeat files, written on every request
    options = {
        "bind": f"{settings.api_host}:{settings.api_port}",
        "workers": settings.api_workers,
        "worker_class": "gthread",
        "threads": settings.api_threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "accesslog": "/dev/stderr",  # logs go to standard error; standard output stays clean
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "preload_app": False,
        "worker_tmp_dir": None if scratch is None else str(scratch),
        # The limits of moderation.api_schema, which the OpenAPI document's 414/431 cite.
        "limit_request_line": MAX_REQUEST_LINE_BYTES,
        "limit_request_fields": MAX_HEADER_FIELDS,
        "limit_request_field_size": MAX_HEADER_FIELD_BYTES,
    }
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _share_metrics_between_workers() -> None:
    """Points prometheus-client at a fresh folder so a scrape sums every worker's counters."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="dfmod-api-metrics-", dir=scratch_dir())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def serve(settings: Settings, **overrides: Any) -> None:
    """Runs the API under gunicorn until interrupted."""
    from gunicorn.app.base import BaseApplication

    from webhook_api import allocator, server_errors

    server_errors.install()
    allocator.keep_freed_buffers()  # before the fork: every worker inherits it
    options = gunicorn_options(settings, **overrides)
    if options["workers"] > 1:
        # Must happen before any worker imports prometheus_client (workers import after fork).
        _share_metrics_between_workers()
        options["child_exit"] = _child_exit

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from webhook_api import create_app

            return create_app(settings)

    _Server().run()


@click.command("api")
@click.option("--host", default=None, help="Listen address (default DFMOD_API_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default DFMOD_API_PORT).")
@click.option("--workers", type=int, default=None, help="Processes (default DFMOD_API_WORKERS).")
@click.option("--threads", type=int, default=None, help="Threads each (default DFMOD_API_THREADS).")
@click.option("--migrate/--no-migrate", "run_migrations", default=False, help="Migrate first.")
def api_command(
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    run_migrations: bool,
) -> None:
    """Run the webhook API with a multi-threaded server (gunicorn, gthread workers)."""
    changes = {"api_host": host, "api_port": port, "api_workers": workers, "api_threads": threads}
    settings = load_settings(None, **{k: v for k, v in changes.items() if v is not None})
    if run_migrations:
        from moderation.db import migrate

        migrate(settings.resolved_database_url)
    click.echo(f"dfmod API on http://{settings.api_host}:{settings.api_port}", err=True)
    serve(settings)


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def migrate_command(revision: str) -> None:
    """Upgrade the database schema (DFMOD_DATABASE_URL) to the newest revision."""
    from moderation.db import current_revision, migrate

    url = load_settings().resolved_database_url
    migrate(url, revision)
    click.echo(f"database at revision {current_revision(url)}")


@click.group("tenant")
def tenant_group() -> None:
    """Manage tenants."""


@tenant_group.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (api_key, webhook_secret, ...).")
def tenant_create(name: str, as_json: bool) -> None:
    """Create a tenant and print its API key and webhook secret (shown only this once)."""
    from moderation.tenants import create_tenant

    created = cli_transaction(
        load_settings().resolved_database_url,
        lambda session: create_tenant(session=session, name=name),
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tenant_id": created.tenant_id,
                    "name": created.name,
                    "api_key": created.api_key,
                    "webhook_secret": created.webhook_secret,
                }
            )
        )
        return
    click.echo(f"tenant_id:      {created.tenant_id}\nname:           {created.name}")
    click.echo(f"api_key:        {created.api_key}\nwebhook_secret: {created.webhook_secret}")
    click.echo("Store both now: they are not shown again.", err=True)


@tenant_group.command("rotate-secret")
@click.argument("name")
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="How long callbacks carry the old secret's signature beside the new one.",
)
def tenant_rotate_secret(name: str, overlap_hours: float) -> None:
    """Give a tenant a new webhook secret (printed once); the old one keeps signing meanwhile."""
    from moderation.tenants import rotate_secret

    secret = cli_transaction(
        load_settings().resolved_database_url,
        lambda session: rotate_secret(session=session, name=name, overlap_hours=overlap_hours),
    )
    click.echo(f"webhook_secret: {secret}")
    click.echo(
        f"Store it now: it is not shown again. Callbacks are signed with both the new and the "
        f"old secret for {overlap_hours:g} hours.",
        err=True,
    )


@tenant_group.command("set-rate-limit")
@click.argument("name")
@click.option(
    "--per-minute",
    type=int,
    default=None,
    help="Submissions this tenant may make per minute; 0: unlimited.",
)
@click.option(
    "--default",
    "use_default",
    is_flag=True,
    help="Clear the tenant's own limit: DFMOD_RATE_LIMIT_PER_MINUTE applies again.",
)
def tenant_set_rate_limit(name: str, per_minute: int | None, use_default: bool) -> None:
    """Set a tenant's submissions per minute (0: unlimited), or --default for the global one."""
    from moderation.tenants import set_rate_limit

    if (per_minute is not None) == use_default:
        raise click.UsageError("expected exactly one of --per-minute N or --default")
    if per_minute is not None and per_minute < 0:
        raise click.BadParameter(
            f"{per_minute} is negative; expected 0 (unlimited) or more",
            param_hint="'--per-minute'",
        )
    settings = load_settings()
    tenant = cli_transaction(
        settings.resolved_database_url,
        lambda session: set_rate_limit(session=session, name=name, per_minute=per_minute),
    )
    limit = tenant.rate_limit_per_minute
    if limit is None:
        default = settings.rate_limit_per_minute
        shown = f"{default} per minute" if default > 0 else "unlimited"
        click.echo(f"{tenant.name}: global default (DFMOD_RATE_LIMIT_PER_MINUTE, now {shown})")
    elif limit == 0:
        click.echo(f"{tenant.name}: unlimited")
    else:
        click.echo(f"{tenant.name}: {limit} submissions per minute")


@tenant_group.command("set-provenance-policy")
@click.argument("name")
@click.option(
    "--policy",
    type=click.Choice(["trusted", "signed", "off"]),
    default=None,
    help="trusted: only manifests whose signer chains to DFMOD_C2PA_TRUST_ANCHORS flag AI "
    "generation; signed: any intact signature; off: provenance is reported, never decides.",
)
@click.option(
    "--default",
    "use_default",
    is_flag=True,
    help="Clear the tenant's own policy: DFMOD_PROVENANCE_POLICY applies again.",
)
def tenant_set_provenance_policy(name: str, policy: str | None, use_default: bool) -> None:
    """Set which C2PA manifests declaring AI generation flag a tenant's items."""
    from moderation.tenants import set_provenance_policy

    if (policy is not None) == use_default:
        raise click.UsageError("expected exactly one of --policy trusted|signed|off or --default")
    settings = load_settings()
    chosen = cli_transaction(
        settings.resolved_database_url,
        lambda session: set_provenance_policy(session=session, name=name, policy=policy),
    )
    if chosen is None:
        click.echo(
            f"{name}: global default (DFMOD_PROVENANCE_POLICY, now {settings.provenance_policy})"
        )
    else:
        click.echo(f"{name}: {chosen}")


@tenant_group.command("set-models")
@click.argument("name")
@click.option("--models", default=None, help="Comma-separated models, e.g. deepfake_detector.")
@click.option("--default", "use_default", is_flag=True, help="Use DFMOD_MODELS again.")
def tenant_set_models(name: str, models: str | None, use_default: bool) -> None:
    """Set which models score a tenant's items (their ensemble gives p_fake)."""
    from moderation.tenant_models import set_models

    if (models is not None) == use_default:
        raise click.UsageError("expected exactly one of --models A,B or --default")
    settings = load_settings()
    chosen = cli_transaction(
        settings.resolved_database_url,
        lambda session: set_models(
            session=session,
            name=name,
            models=None if models is None else models.split(","),
            repository=settings.model_repository,
        ),
    )
    click.echo(f"{name}: {', '.join(chosen) if chosen else 'global default (DFMOD_MODELS)'}")


@tenant_group.command("set-thresholds")
@click.argument("name")
@click.option("--pass-below", type=click.FloatRange(0, 1), default=None)
@click.option("--flag-at", type=click.FloatRange(0, 1), default=None)
@click.option(
    "--default", "use_default", is_flag=True, help="Use the model's or ensemble's thresholds."
)
def tenant_set_thresholds(
    name: str, pass_below: float | None, flag_at: float | None, use_default: bool
) -> None:
    """Set a tenant's thresholds on p_fake: below --pass-below passes, from --flag-at flags."""
    from moderation.tenant_models import set_thresholds

    given = pass_below is not None or flag_at is not None
    if given == use_default:
        raise click.UsageError("expected --pass-below and/or --flag-at, or --default")
    settings = load_settings()
    chosen = cli_transaction(
        settings.resolved_database_url,
        lambda session: set_thresholds(
            session=session, name=name, pass_below=pass_below, flag_at=flag_at
        ),
    )
    shown = ["model default" if v is None else f"{v:g}" for v in chosen]
    click.echo(f"{name}: pass_below {shown[0]}, flag_at {shown[1]}")

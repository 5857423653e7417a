"""``dfmod up``: the whole embedded stack on one machine, with nothing to install.

Migrates, creates a demo tenant on the first run, starts Triton, a worker with the embedded
sweeper and the API, and stops them all together. SQLite files under ``DFMOD_DATA_DIR`` unless
``DFMOD_DATABASE_URL`` and ``DFMOD_BROKER_URL`` say otherwise.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import click

from moderation.settings import Settings, load_settings

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
API_START_TIMEOUT_S = 60.0
DEMO_TENANT = "demo"


def ensure_demo_tenant(settings: Settings) -> tuple[str, str] | None:
    """Creates the demo tenant when no tenant exists; returns (api_key, secret) or None."""
    from sqlalchemy import func, select

    from moderation.db import make_engine, make_session_factory, session_scope
    from moderation.models import Tenant
    from moderation.tenants import create_tenant

    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            if session.scalar(select(func.count()).select_from(Tenant)):
                return None
            created = create_tenant(session=session, name=DEMO_TENANT)
            return created.api_key, created.webhook_secret
    finally:
        engine.dispose()


def child_environment(settings: Settings) -> dict[str, str]:
    """Returns the environment of the children: ours, with the data folder made absolute."""
    env = dict(os.environ)
    env["DFMOD_DATA_DIR"] = str(settings.data_dir.resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Children:
    """The child processes of ``dfmod up``, each in its own session so Ctrl-C reaches only us."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str) -> None:
        command = [sys.executable, "-m", "moderation.cli", *args]
        logger.info("starting %s: %s", name, " ".join(command))
        self.procs[name] = subprocess.Popen(command, env=self.env, start_new_session=True)

    def exited(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %gs; killing it", name, timeout_s)
                proc.kill()
                proc.wait()


def wait_for_port(host: str, port: int, *, timeout_s: float, alive: Any = None) -> bool:
    """Returns True once ``host:port`` accepts connections, False on timeout or dead child."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _banner(settings: Settings, demo: tuple[str, str] | None) -> str:
    base = f"http://{settings.api_host}:{settings.api_port}"
    lines = [
        "",
        f"dfmod is up: API {base} (data in {settings.data_dir.resolve()}; Ctrl-C stops all)",
    ]
    key = "$DFMOD_API_KEY"
    if demo is not None:
        key = demo[0]
        lines += [
            "",
            "Created the demo tenant (shown once, keep it):",
            f"  API key:        {demo[0]}",
            f"  webhook secret: {demo[1]}",
        ]
    lines += [
        "",
        "Try it:",
        f'  curl -s -H "Authorization: Bearer {key}" -F file=@photo.jpg {base}/v1/submissions',
        f'  curl -s -H "Authorization: Bearer {key}" {base}/v1/submissions/<id>',
        "",
    ]
    return "\n".join(lines)


def _install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    def handler(signum: int, _frame: Any) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def _supervise(children: Children, stop: threading.Event) -> int:
    while not stop.wait(0.5):
        dead = children.exited()
        if dead is not None:
            click.echo(f"{dead[0]} exited with code {dead[1]}; stopping the stack", err=True)
            return dead[1] or 1
    return 0


def _start_triton(settings: Settings) -> Any:
    from serving.server import TritonServer, TritonStartError

    triton = TritonServer.from_settings(settings)
    click.echo(
        f"starting Triton on grpc :{settings.triton_grpc_port} (model {settings.model_name})"
    )
    try:
        triton.start()
    except TritonStartError as exc:
        raise click.ClickException(f"Triton did not start: {exc}") from exc
    return triton


@click.command("up")
@click.option("--triton/--no-triton", default=True, help="Start the bundled Triton (default).")
@click.option("-c", "--concurrency", type=int, default=None, help="Worker threads/processes.")
def up_command(triton: bool, concurrency: int | None) -> None:
    """Run the embedded stack: migrate, demo tenant, Triton, worker with sweeper, API."""
    from moderation.db import migrate

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.resolved_database_url)
    demo = ensure_demo_tenant(settings)
    stop = threading.Event()
    previous = _install_stop_handlers(stop)
    server, children = None, Children(child_environment(settings))
    code = 1
    try:
        server = _start_triton(settings) if triton and not stop.is_set() else None
        worker_args = ["worker", "--beat"] + (["-c", str(concurrency)] if concurrency else [])
        children.spawn("worker", *worker_args)
        children.spawn("api", "api")
        api = children.procs["api"]
        if not wait_for_port(
            settings.api_host,
            settings.api_port,
            timeout_s=API_START_TIMEOUT_S,
            alive=lambda: api.poll() is None and not stop.is_set(),
        ):
            if stop.is_set():
                sys.exit(0)
            raise click.ClickException(f"the API did not listen on :{settings.api_port}")
        click.echo(_banner(settings, demo))
        code = _supervise(children, stop)
    finally:
        children.stop()
        if server is not None:
            server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    sys.exit(code)

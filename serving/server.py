"""The bundled ``tritonserver`` (nvidia-pytriton wheel): start, stop, ``dfmod triton``; and model
control over HTTP for any running Triton (:func:`load_model`, :func:`serving_versions`).

The server runs in explicit model-control mode on the repository's own ``config.pbtxt``; every
call to it goes through ``tritonclient.http`` and its failures become :class:`TritonStartError`
in words. Design: docs/design.md, "Serving".
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from moderation import contract
from moderation.settings import Settings, load_settings
from serving.env import (
    BundledTriton,
    TritonStartError,
    check_repository,
    locate_bundled,
    port_in_use,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

__all__ = ["TritonServer", "TritonStartError", "load_model", "triton_command"]

EXIT_TIMEOUT_S = 20
_LOG_TAIL_CHARS = 3000


class TritonServer:
    """A bundled ``tritonserver`` process serving one model repository on loopback ports."""

    def __init__(
        self,
        *,
        repository: Path,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        model_name: str = contract.MODEL_NAME,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        work_dir: Path | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.model_name = model_name
        self.host = host
        self._work_dir = Path(work_dir).resolve() if work_dir else None
        self._own_work_dir = False
        self.log_path = Path(log_path).resolve() if log_path else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._backends: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonServer:
        """Returns a server configured from settings (ports, repository, data folder)."""
        work_dir = settings.data_dir.resolve() / "triton"
        return cls(
            repository=settings.model_repository,
            grpc_port=settings.triton_grpc_port,
            http_port=settings.triton_http_port,
            metrics_port=settings.triton_metrics_port,
            model_name=settings.model_name,
            log_path=work_dir / "tritonserver.log",
            work_dir=work_dir,
        )

    @property
    def grpc_url(self) -> str:
        """Returns host:port of the gRPC endpoint."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """Returns the base URL of the HTTP endpoint."""
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def running(self) -> bool:
        """Returns whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 120.0) -> None:
        """Starts the server and returns when the model is ready; raises TritonStartError."""
        if self.running:
            return
        bundled = locate_bundled()
        check_repository(self.repository, self.model_name)
        self._check_ports()
        work_dir = self._prepare_work_dir()
        # A private backend folder per start: another server sharing the work folder keeps its own.
        self._backends = Path(tempfile.mkdtemp(prefix="backends-", dir=work_dir))
        backends = bundled.install_backends(self._backends)
        self.log_path = self.log_path or work_dir / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = self._command(bundled, backends)
        logger.info("starting %s (log: %s)", " ".join(command), self.log_path)
        self._process = subprocess.Popen(
            command,
            env=bundled.environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        logger.info("Triton ready: model %s on grpc %s", self.model_name, self.grpc_url)
        self.load_other_models()

    def other_models(self) -> list[str]:
        """Returns the repository's other servable models (a config and a numbered ONNX)."""
        names = []
        for folder in sorted(self.repository.iterdir()):
            if folder.name == self.model_name or not (folder / "config.pbtxt").is_file():
                continue
            if any(
                p.name.isdigit() and (p / contract.ONNX_FILENAME).is_file()
                for p in folder.iterdir()
            ):
                names.append(folder.name)
        return names

    def load_other_models(self) -> dict[str, str]:
        """Loads every other model of the repository (the ensemble's members); returns errors.

        After the primary model is ready, one by one: a model that fails to load is logged and
        left out (the worker scores with the others and marks the verdict partial), it never
        stops the server.
        """
        errors = {}
        for name in self.other_models():
            try:
                load_model(http_url=self.http_url, model_name=name)
            except TritonStartError as exc:
                errors[name] = str(exc)
                logger.warning("Triton could not load %s: %s", name, exc)
        return errors

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stops the server: SIGTERM, wait for in-flight requests, then SIGKILL if needed."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver did not stop within %.0f s; killing it", timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._backends is not None:
            shutil.rmtree(self._backends, ignore_errors=True)
            self._backends = None
        if self._own_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir, self._own_work_dir = None, False

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Returns the exit code once the process ends (None if still running after timeout)."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    # -- model control ---------------------------------------------------------------------

    def load_model(self) -> None:
        """(Re)loads the model so that newly written versions serve (version_policy decides)."""
        try:
            load_model(http_url=self.http_url, model_name=self.model_name)
        except TritonStartError as exc:
            raise TritonStartError(f"{exc}\n{self.log_tail()}") from exc

    def serving_versions(self) -> list[str]:
        """Returns the versions of the model that are ready now."""
        return serving_versions(http_url=self.http_url, model_name=self.model_name)

    def statistics(self) -> dict[str, Any]:
        """Returns Triton's statistics for the model (counts, batch sizes, queue times)."""
        return dict(
            _ask(
                self.http_url,
                f"read the statistics of {self.model_name}",
                lambda c: c.get_inference_statistics(self.model_name),
                timeout_s=10.0,
            )
        )

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """Returns the end of the server log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(errors="replace")
        return f"--- end of {self.log_path} ---\n{text[-chars:]}"

    # -- helpers ---------------------------------------------------------------------------

    def _prepare_work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="dfmod-triton-"))
            self._own_work_dir = True
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def _check_ports(self) -> None:
        for label, port in (
            ("gRPC", self.grpc_port),
            ("HTTP", self.http_port),
            ("metrics", self.metrics_port),
        ):
            if port_in_use(self._client_host, port):
                raise TritonStartError(
                    f"the Triton {label} port {port} is already in use on {self._client_host}; "
                    f"stop what listens there or choose another port "
                    f"(--{label.lower()}-port or DFMOD_TRITON_{label.upper()}_PORT)"
                )

    def _command(self, bundled: BundledTriton, backends: Path) -> list[str]:
        return [
            str(bundled.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={bundled.caches}",
            "--model-control-mode=explicit",
            f"--load-model={self.model_name}",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=true",
            # Room for a 32-image batch (4.8 MB) in the stub's shared memory without regrowth.
            "--backend-config=python,shm-default-byte-size=8388608",
            "--backend-config=python,shm-growth-byte-size=8388608",
        ]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with _client(self.http_url, timeout_s=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise TritonStartError(
                        f"tritonserver exited with code {code} before {self.model_name} was "
                        f"ready\n{self.log_tail()}"
                    )
                try:
                    if client.is_model_ready(self.model_name):
                        return
                except (InferenceServerException, OSError):
                    pass  # not listening yet
                time.sleep(0.25)
        raise TritonStartError(
            f"{self.model_name} was not ready within {timeout_s:.0f} s\n{self.log_tail()}"
        )


@contextmanager
def _client(http_url: str, *, timeout_s: float) -> Iterator[httpclient.InferenceServerClient]:
    """Yields an HTTP client for ``http://host:port`` whose connect and reads wait ``timeout_s``."""
    parts = urlsplit(http_url if "://" in http_url else f"http://{http_url}")
    client = httpclient.InferenceServerClient(
        f"{parts.netloc}{parts.path.rstrip('/')}",
        connection_timeout=timeout_s,
        network_timeout=timeout_s,
        ssl=parts.scheme == "https",
    )
    try:
        yield client
    finally:
        client.close()


def _ask(
    http_url: str,
    what: str,
    call: Callable[[httpclient.InferenceServerClient], _T],
    *,
    timeout_s: float,
) -> _T:
    """Returns ``call``'s answer; raises TritonStartError saying what failed, in words."""
    base = http_url.rstrip("/")
    try:
        with _client(base, timeout_s=timeout_s) as client:
            return call(client)
    except InferenceServerException as exc:
        raise TritonStartError(
            f"Triton at {base} refused to {what}: {exc.message() or exc}"
        ) from exc
    except OSError as exc:  # a refused connection, an unknown host, no answer in time
        raise TritonStartError(
            f"cannot reach Triton at {base} to {what}: {exc or type(exc).__name__}"
        ) from exc


def serving_versions(*, http_url: str, model_name: str = contract.MODEL_NAME) -> list[str]:
    """Returns the versions of a model that a running Triton serves now."""
    metadata = _ask(
        http_url,
        f"read the versions of {model_name}",
        lambda c: c.get_model_metadata(model_name),
        timeout_s=10.0,
    )
    return [str(v) for v in metadata.get("versions", [])]


def load_model(*, http_url: str, model_name: str = contract.MODEL_NAME) -> list[str]:
    """Asks a running Triton (bundled or NGC) to (re)load a model; returns the serving versions.

    In explicit model-control mode this is how a newly deployed version N+1 starts serving:
    Triton loads it, then retires N once N+1 is ready; requests in flight on N finish on N.
    """
    _ask(http_url, f"load {model_name}", lambda c: c.load_model(model_name), timeout_s=300.0)
    serving = serving_versions(http_url=http_url, model_name=model_name)
    logger.info("loaded %s at %s; serving versions %s", model_name, http_url.rstrip("/"), serving)
    return serving


def _serve_until_signalled(server: TritonServer) -> int:
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        logger.info("received %s; stopping Triton", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            code = server.wait(timeout_s=0.5)
            if code is not None:
                click.echo(f"tritonserver exited unexpectedly (code {code})", err=True)
                click.echo(server.log_tail(), err=True)
                return code or 1
        return 0
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@click.command("triton")
@click.option(
    "--repository",
    type=click.Path(path_type=Path),
    default=None,
    help="Model repository (default: DFMOD_MODEL_REPOSITORY).",
)
@click.option(
    "--grpc-port", type=int, envvar="DFMOD_TRITON_GRPC_PORT", default=None, help="Default 8001."
)
@click.option(
    "--http-port", type=int, envvar="DFMOD_TRITON_HTTP_PORT", default=None, help="Default 8000."
)
@click.option(
    "--metrics-port",
    type=int,
    envvar="DFMOD_TRITON_METRICS_PORT",
    default=None,
    help="Default 8002.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=180.0,
    show_default=True,
    help="Seconds to wait for the model to be ready.",
)
def triton_command(
    repository: Path | None,
    grpc_port: int | None,
    http_port: int | None,
    metrics_port: int | None,
    host: str,
    timeout_s: float,
) -> None:
    """Run the bundled Triton server on the model repository until SIGTERM or Ctrl-C."""
    settings = load_settings()
    server = TritonServer.from_settings(settings)
    server.repository = (repository or settings.model_repository).resolve()
    server.grpc_port = grpc_port or settings.triton_grpc_port
    server.http_port = http_port or settings.triton_http_port
    server.metrics_port = metrics_port or settings.triton_metrics_port
    server.host = host
    try:
        server.start(timeout_s=timeout_s)
    except TritonStartError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Triton serving {server.model_name} versions {server.serving_versions()} from "
        f"{server.repository}: grpc {server.grpc_url}, http {server.http_url}, "
        f"metrics :{server.metrics_port}; log {server.log_path}. Ctrl-C stops it."
    )
    sys.exit(_serve_until_signalled(server))

"""``dfmod scan FILE...``: score image files straight through Triton, no database or queue.

The worker's preprocessing, one batched gRPC call and the answering version's calibration and
policy; ``--start-server`` runs the bundled Triton for the duration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from moderation.contract import ModelMetadata
from moderation.policy import calibrate, decide
from moderation.preprocess import ImageLimits, MediaRejected, load_image
from moderation.settings import Settings, load_settings
from serving.client import InferenceResult, InferenceUnavailable, TritonClient
from serving.env import TritonStartError, free_ports

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanLine:
    """What ``dfmod scan`` reports for one file."""

    file: str
    verdict: str  # auto_passed / auto_flagged / needs_review, or "rejected"
    p_fake: float | None = None
    logit: float | None = None
    model: str = ""
    model_version: str = ""
    reason: str = ""
    detail: str = ""

    def text(self) -> str:
        """Returns the line for people."""
        if self.verdict == "rejected":
            return f"{self.file}: rejected ({self.reason}) {self.detail}"
        return (
            f"{self.file}: {self.verdict}  p(fake)={self.p_fake:.4f}  logit={self.logit:+.4f}  "
            f"[{self.model} v{self.model_version}]"
        )


def _metadata(settings: Settings, result: InferenceResult) -> ModelMetadata:
    version_dir = settings.model_repository / result.model_name / result.model_version
    if not version_dir.is_dir():
        logger.warning("no %s here; using default calibration", version_dir)
    return ModelMetadata.read(version_dir)


def scan_files(paths: list[Path], *, client: TritonClient, settings: Settings) -> list[ScanLine]:
    """Returns one line per file: a verdict from Triton, or the preprocessing refusal."""
    limits = ImageLimits.from_settings(settings)
    lines: dict[int, ScanLine] = {}
    arrays: list[np.ndarray] = []
    indices: list[int] = []
    for index, path in enumerate(paths):
        try:
            arrays.append(load_image(path.read_bytes(), limits))
            indices.append(index)
        except MediaRejected as exc:
            lines[index] = ScanLine(str(path), "rejected", reason=exc.reason, detail=exc.detail)
        except OSError as exc:
            lines[index] = ScanLine(
                str(path), "rejected", reason="unreadable_file", detail=str(exc)
            )
    if arrays:
        result = client.infer(np.stack(arrays))
        meta = _metadata(settings, result)
        for index, logit in zip(indices, result.logits.tolist(), strict=True):
            p_fake = calibrate(logit, meta.temperature)
            verdict = decide(p_fake, pass_below=meta.pass_below, flag_at=meta.flag_at)
            lines[index] = ScanLine(
                str(paths[index]),
                str(verdict),
                p_fake,
                logit,
                result.model_name,
                result.model_version,
            )
    return [lines[i] for i in range(len(paths))]


@contextlib.contextmanager
def _triton(settings: Settings, start_server: bool) -> Iterator[Settings]:
    if not start_server:
        yield settings
        return
    from serving.server import TritonServer

    grpc_port, http_port, metrics_port = free_ports(3)
    settings = settings.replace(
        triton_host="127.0.0.1",
        triton_grpc_port=grpc_port,
        triton_http_port=http_port,
        triton_metrics_port=metrics_port,
    )
    server = TritonServer(
        repository=settings.model_repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        model_name=settings.model_name,
    )  # a private temporary work folder: never disturbs a `dfmod triton` already running
    with server:
        logger.info("started the bundled Triton on %s", server.grpc_url)
        yield settings


@click.command("scan")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--url", default=None, help="Triton gRPC host:port (default: DFMOD_TRITON_*).")
@click.option("--start-server", is_flag=True, help="Run the bundled Triton for this scan.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def scan_command(
    files: tuple[Path, ...], url: str | None, start_server: bool, as_json: bool
) -> None:
    """Score image files through Triton and print a verdict per file (no queue, no database)."""
    settings = load_settings()
    if url:
        host, _, port = url.rpartition(":")
        settings = settings.replace(triton_host=host, triton_grpc_port=int(port))
    try:
        with _triton(settings, start_server) as active:
            client = TritonClient.from_settings(active)
            lines = scan_files(list(files), client=client, settings=active)
            client.close()
    except InferenceUnavailable as exc:
        raise click.ClickException(
            f"{exc}\nIs Triton running? Start it with `dfmod triton` or pass --start-server."
        ) from exc
    except TritonStartError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in lines:
        click.echo(json.dumps(asdict(line)) if as_json else line.text())
    sys.exit(2 if any(line.verdict == "rejected" for line in lines) else 0)

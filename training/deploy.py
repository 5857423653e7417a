"""Publishing a model version to the running Triton, recording it, and rolling back.

Deploy writes the version folder (:func:`moderation.version_folders.write_version`), loads it,
checks that version N answers and records a :class:`~moderation.models.ModelVersion`; a failure
restores the previous version, and a rollback republishes it as a new number (docs/design.md,
"Labels, retraining, deploy and rollback").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import contract
from moderation.models import ModelVersion
from moderation.settings import Settings
from moderation.version_folders import next_version, version_numbers, write_version
from training.export import CHECKPOINT_FILENAME

logger = logging.getLogger(__name__)

SERVED_FILES = (contract.ONNX_FILENAME, contract.METADATA_FILENAME, CHECKPOINT_FILENAME)


class DeployError(RuntimeError):
    """A version could not be published or did not serve; the message says what happened."""


@dataclass(frozen=True)
class ServingTarget:
    """Where versions are written and which Triton serves them."""

    repository: Path
    model_name: str
    http_url: str
    grpc_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingTarget:
        return cls(
            repository=Path(settings.model_repository),
            model_name=settings.model_name,
            http_url=f"http://{settings.triton_host}:{settings.triton_http_port}",
            grpc_url=settings.triton_grpc_url,
        )

    @property
    def model_dir(self) -> Path:
        return self.repository / self.model_name


def _check_outputs(source: Path, target: ServingTarget) -> None:
    """Refuses a model file without an output the repository's config.pbtxt names (``cam``)."""
    import onnxruntime as ort

    config = target.model_dir / "config.pbtxt"
    if not config.is_file() or f'name: "{contract.CAM_NAME}"' not in config.read_text():
        return
    try:
        session = ort.InferenceSession(
            str(source / contract.ONNX_FILENAME), providers=["CPUExecutionProvider"]
        )
    except Exception:  # not a model at all: Triton refuses it and the live version stays
        return
    if contract.CAM_NAME not in {o.name for o in session.get_outputs()}:
        raise DeployError(
            f"{source.name}/{contract.ONNX_FILENAME} has no {contract.CAM_NAME!r} output, which "
            f"{config.name} names; re-export it first: python -m training.reexport {source}"
        )


def publish(
    *, source: Path, target: ServingTarget, extra: dict[str, Any] | None = None
) -> tuple[int, Path]:
    """Copies a version folder in as the next number (temporary folder, then rename)."""
    if not (source / contract.ONNX_FILENAME).is_file():
        raise DeployError(f"{source} has no {contract.ONNX_FILENAME}; expected a version folder")
    _check_outputs(source, target)

    def fill(folder: Path) -> contract.ModelMetadata:
        for name in SERVED_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, folder / name)
        meta = contract.ModelMetadata.read(source)
        return dataclasses.replace(meta, extra={**meta.extra, **(extra or {})})

    version = next_version(target.model_dir)
    final = write_version(target.model_dir, version, fill)
    logger.info("published %s as version %d", source, version)
    return version, final


def _probe_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(1, *contract.INPUT_SHAPE), dtype=np.uint8)


def check_serving(*, target: ServingTarget, version: int, timeout_s: float = 30.0) -> str:
    """Asks the served model one inference; returns the answering version or raises."""
    from serving.client import TritonClient

    client = TritonClient(target.grpc_url, model_name=target.model_name, timeout_s=timeout_s)
    try:
        result = client.infer(_probe_image())
    finally:
        client.close()
    if result.model_version != str(version) or not np.isfinite(result.logits).all():
        raise DeployError(
            f"expected version {version} to answer with a finite logit; "
            f"version {result.model_version} answered {result.logits.tolist()}"
        )
    return result.model_version


def activate(*, target: ServingTarget, version: int, folder: Path) -> None:
    """Loads the model and checks ``version`` answers; on failure retires the folder and reloads."""
    from serving.server import TritonStartError, load_model

    try:
        serving = load_model(http_url=target.http_url, model_name=target.model_name)
        if serving and str(version) not in serving:
            raise DeployError(f"Triton serves {serving} after loading; expected {version}")
        check_serving(target=target, version=version)
    except Exception as exc:  # whatever failed, the previous version must keep serving
        failed = folder.parent / f".{folder.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(folder, failed)
        logger.error("version %d did not serve (%s); moved to %s, reloading", version, exc, failed)
        try:
            load_model(http_url=target.http_url, model_name=target.model_name)
        except TritonStartError:
            logger.exception("reloading the previous version failed too")
        raise DeployError(f"version {version} did not serve: {exc}") from exc
    logger.info("version %d of %s serves", version, target.model_name)


def record_deployment(
    session: Session,
    *,
    model_name: str,
    version: int,
    deployed_by: str,
    metrics: dict[str, Any],
) -> ModelVersion:
    """Marks ``version`` live (and every other version of the model not live)."""
    for row in session.scalars(select(ModelVersion).where(ModelVersion.name == model_name)):
        row.live = False
    row = ModelVersion(
        name=model_name,
        version=str(version),
        metrics=metrics,
        deployed_at=dt.datetime.now(dt.timezone.utc),
        deployed_by=deployed_by,
        live=True,
    )
    session.add(row)
    session.flush()
    return row


def live_version(session: Session, *, model_name: str) -> ModelVersion | None:
    """Returns the recorded live version of the model, if any deployment was recorded."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.name == model_name, ModelVersion.live.is_(True))
        .order_by(ModelVersion.deployed_at.desc())
    ).first()


def deploy(
    *,
    session: Session,
    source: Path,
    target: ServingTarget,
    deployed_by: str,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> ModelVersion:
    """Publishes ``source`` as version N+1, makes it serve, checks it, and records it live."""
    version, folder = publish(source=source, target=target, extra=extra)
    activate(target=target, version=version, folder=folder)
    row = record_deployment(
        session,
        model_name=target.model_name,
        version=version,
        deployed_by=deployed_by,
        metrics=metrics,
    )
    logger.info("deployed %s version %d by %s", target.model_name, version, deployed_by)
    return row


def previous_version(session: Session, *, target: ServingTarget) -> tuple[int, int, dict[str, Any]]:
    """Returns (live, previous, previous metrics): the weights served before the live ones.

    Recorded deployments decide; the version before a rollback is the one the rollback replaced.
    Without records, the two highest version folders are live and previous.
    """
    rows = list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == target.model_name)
            .order_by(ModelVersion.deployed_at.desc(), ModelVersion.created_at.desc())
        )
    )
    on_disk = set(version_numbers(target.model_dir))
    live = next((r for r in rows if r.live), None)
    if live is not None:
        for row in rows[rows.index(live) + 1 :]:
            if row.version != live.version and int(row.version) in on_disk:
                return int(live.version), int(row.version), dict(row.metrics)
    ordered = sorted(on_disk)
    if len(ordered) < 2:
        raise DeployError(f"{target.model_dir} holds {ordered}; a rollback needs two versions")
    return ordered[-1], ordered[-2], {}


def rollback(*, session: Session, target: ServingTarget, deployed_by: str) -> ModelVersion:
    """Serves the previous version's weights again, published as a new version number."""
    live, previous, metrics = previous_version(session, target=target)
    source = target.model_dir / str(previous)
    logger.info("rolling back %s from %d to the weights of %d", target.model_name, live, previous)
    return deploy(
        session=session,
        source=source,
        target=target,
        deployed_by=deployed_by,
        metrics={**metrics, "rollback_of": live, "weights_of": previous},
        extra={"rollback": {"replaces": live, "weights_of": previous}},
    )

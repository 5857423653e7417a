"""The model versions the overview lists: every folder in the model repository, and which serves.

Read from ``model_repository/<model>/<N>/metadata.json`` (metrics, calibration, what it was trained
on) and from Triton (the versions it serves now), so a fresh install shows its bundled version
from the first start, before any deployment was recorded in the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation import contract
from moderation.settings import Settings

logger = logging.getLogger(__name__)

# Metrics the overview shows, in this order, when metadata.json has them.
SHOWN_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "eer", "ece_after", "count")
TRITON_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RepositoryVersion:
    """One version folder as the overview shows it."""

    version: str
    metrics: dict[str, Any]
    created_at: str
    trained_on: str
    has_cam: bool
    serving: bool | None  # None: Triton could not be asked
    problem: str | None = None


@dataclass(frozen=True)
class RepositoryView:
    """The repository's versions (newest first) and what Triton said."""

    versions: list[RepositoryVersion] = field(default_factory=list)
    serving: list[str] | None = None
    triton_detail: str = ""


def _has_cam(folder: Path) -> bool:
    """Returns whether the version's metadata records a Grad-CAM parity check (cam output)."""
    meta = contract.ModelMetadata.read(folder)
    return "cam_parity" in meta.extra


def _serving(settings: Settings) -> tuple[list[str] | None, str]:
    from serving.client import TritonClient

    client = TritonClient(
        settings.triton_grpc_url,
        model_name=settings.model_name,
        timeout_s=TRITON_TIMEOUT_S,
        retries=0,
    )
    try:
        return client.serving_versions(), f"Triton at {settings.triton_grpc_url}"
    except Exception as exc:  # the overview must render while Triton is down
        logger.info("overview: Triton not reachable: %s", exc)
        return None, f"Triton at {settings.triton_grpc_url} did not answer"
    finally:
        client.close()


def repository_view(settings: Settings) -> RepositoryView:
    """Returns every numbered version folder of the served model and which one Triton serves."""
    model_dir = Path(settings.model_repository) / settings.model_name
    folders = sorted(
        (p for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    serving, detail = _serving(settings) if folders else (None, "")
    versions = []
    for folder in folders:
        try:
            meta = contract.ModelMetadata.read(folder)
            shown = {k: meta.metrics[k] for k in SHOWN_METRICS if k in meta.metrics}
            versions.append(
                RepositoryVersion(
                    folder.name,
                    shown,
                    meta.created_at,
                    meta.trained_on,
                    _has_cam(folder),
                    None if serving is None else folder.name in serving,
                )
            )
        except (ValueError, TypeError, OSError) as exc:
            problem = f"metadata.json unreadable: {type(exc).__name__}"
            versions.append(RepositoryVersion(folder.name, {}, "", "", False, None, problem))
    return RepositoryView(versions, serving, detail)

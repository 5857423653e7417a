"""A model's numbered version folders in the model repository: their numbers, and the one writer.

Every new version (``dfmod export``, a deploy or rollback, ``dfmod model import``) is written by
:func:`write_version`: into a hidden staging folder beside it, then renamed into place, so Triton
never sees half a version.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from moderation import contract

CONFIG_FILENAME = "config.pbtxt"


def version_numbers(model_dir: Path) -> list[int]:
    """Returns the numeric version folders under a model folder, ascending."""
    return sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    """Returns the next free numeric version under a model folder (1 when there is none)."""
    return max(version_numbers(model_dir), default=0) + 1


def write_version(
    model_dir: Path,
    version: int,
    fill: Callable[[Path], contract.ModelMetadata],
    *,
    config: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes ``model_dir/<version>/`` atomically and returns it.

    ``fill`` writes the version's files into the (empty) folder it is given and returns the
    version's metadata, stored as ``metadata.json`` with ``version`` set. ``config``, when given,
    replaces the model's ``config.pbtxt`` just before the folder appears. An existing version is
    replaced only with ``overwrite`` (FileExistsError otherwise). Whatever fails, the staging
    folder is removed and the repository keeps its previous versions.
    """
    model_dir = Path(model_dir)
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    staging = model_dir / f".{version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        metadata = fill(staging)
        dataclasses.replace(metadata, version=version).write(staging)
        if config is not None:
            (model_dir / CONFIG_FILENAME).write_text(config)
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

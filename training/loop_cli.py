"""The ``dfmod labels export``, ``dfmod retrain`` and ``dfmod rollback`` commands.

Thin wrappers: settings give the database, blob folder, model repository and Triton address;
the work is in :mod:`moderation.labels`, :mod:`training.retrain` and :mod:`training.deploy`.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.orm import Session

from moderation.settings import load_settings

logger = logging.getLogger(__name__)


@contextmanager
def _session() -> Iterator[Session]:
    from moderation.db import make_engine, make_session_factory, session_scope

    engine = make_engine(load_settings().resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _who(value: str | None) -> str:
    if value:
        return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@click.group("labels")
def labels_group() -> None:
    """Reviewed submissions as training data."""


@labels_group.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def labels_export(out: Path) -> None:
    """Write reviewed images to OUT/real, OUT/fake and OUT/labels.csv (with provenance)."""
    from moderation.blobs import BlobStore
    from moderation.labels import export_labels

    with _session() as session:
        result = export_labels(session=session, blobs=BlobStore(load_settings().blob_dir), out=out)
    click.echo(
        f"{result.total} images ({result.counts['real']} real, {result.counts['fake']} fake) "
        f"in {result.folder}; manifest {result.manifest}; skipped {len(result.skipped)}"
    )
    for submission_id, why in result.skipped:
        click.echo(f"  skipped {submission_id}: {why}")


_PATH = click.Path(exists=True, path_type=Path)


@click.command("retrain")
@click.option("--holdout", type=_PATH, required=True, help="Fixed holdout: real/+fake/ or CSV.")
@click.option("--labels", type=_PATH, default=None, help="Folder from `dfmod labels export`.")
@click.option("--base", type=_PATH, default=None, help="Base data: real/+fake/ folder or CSV.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/retrain"))
@click.option(
    "--init",
    default="live",
    show_default=True,
    help="'live' (the live version's checkpoint), 'scratch', or a checkpoint path.",
)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--freeze-blocks", type=click.IntRange(0, 19), default=14, show_default=True)
@click.option("--max-train-images", type=int, default=None)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--margin-auc", type=float, default=0.02, show_default=True)
@click.option("--margin-bacc", type=float, default=0.02, show_default=True)
@click.option(
    "--genuine",
    type=_PATH,
    default=None,
    help="Genuine-photo manifest: the challenger's thresholds are chosen by error rates on it "
    "(default: the live version's thresholds).",
)
@click.option("--target-fpr", type=click.FloatRange(0, 1, max_open=True), default=0.01)
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95)
@click.option("--by", "deployed_by", default=None, help="Recorded deployer (default: user).")
@click.option("--no-deploy", is_flag=True, help="Train, evaluate and gate only.")
def retrain_command(**options: object) -> None:
    """Retrain on review labels + base data; deploy as N+1 if the holdout gate passes."""
    from training.deploy import ServingTarget
    from training.retrain import RetrainRequest, retrain

    deploy_it = not options.pop("no_deploy")
    who = _who(options.pop("deployed_by"))  # type: ignore[arg-type]
    options["out"] = Path(str(options["out"])).resolve()
    req = RetrainRequest(**options, deployed_by=who, deploy=deploy_it)  # type: ignore[arg-type]
    target = ServingTarget.from_settings(load_settings())
    with _session() as session:
        result = retrain(session=session, req=req, target=target)
    for reason in result.reasons:
        click.echo(reason)
    if not result.passed:
        click.echo(f"challenger refused; version {result.live_version} stays live")
        raise SystemExit(3)
    if result.deployed_version is not None:
        click.echo(f"deployed version {result.deployed_version} (was {result.live_version})")


@click.command("rollback")
@click.option("--by", "deployed_by", default=None, help="Recorded deployer (default: user).")
def rollback_command(deployed_by: str | None) -> None:
    """Serve the previous version's weights again, published as a new version number."""
    from training.deploy import ServingTarget, rollback

    target = ServingTarget.from_settings(load_settings())
    with _session() as session:
        row = rollback(session=session, target=target, deployed_by=_who(deployed_by))
        click.echo(f"version {row.version} serves: {json.dumps(row.metrics, default=str)}")

"""``dfmod model``: import someone else's ONNX detector with a manifest, list the served models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from moderation.settings import load_settings


@click.group("model")
def model_group() -> None:
    """Import detectors (ONNX + manifest) and list the repository's models."""


@model_group.command("import")
@click.argument("name")
@click.argument("onnx_file", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--manifest",
    "manifest_file",
    required=True,
    type=click.Path(path_type=Path),
    help="YAML manifest: input (name, layout, size, dtype, colour_order, resize, normalisation), "
    "output (name, meaning), weights (licence, provenance). See docs/design.md.",
)
@click.option(
    "--repository",
    type=click.Path(path_type=Path),
    default=None,
    help="Triton model repository (default: DFMOD_MODEL_REPOSITORY).",
)
@click.option("--version", type=int, default=None, help="Version number (default: next free).")
@click.option("--load", is_flag=True, help="Ask the running Triton (DFMOD_TRITON_*) to load it.")
def import_command(
    name: str,
    onnx_file: Path,
    manifest_file: Path,
    repository: Path | None,
    version: int | None,
    load: bool,
) -> None:
    """Check MODEL.onnx against its manifest, wrap it and add it as model NAME.

    Refuses (exit 1, nothing written) a manifest that does not describe the graph, naming the
    mismatch. The written version takes uint8 NHWC RGB at the manifest's size and answers one
    logit per image, like every dfmod model.

    Example: dfmod model import univfd univfd.onnx --manifest univfd.yaml
    """
    from moderation.model_import import ManifestError, import_model

    settings = load_settings()
    repo = repository or settings.model_repository
    try:
        result = import_model(
            name=name,
            onnx_path=onnx_file,
            manifest_path=manifest_file,
            repository=repo,
            version=version,
        )
    except ManifestError as exc:
        raise click.ClickException(f"refused: {exc}") from exc
    click.echo(
        f"imported {result.name} version {result.version} ({result.size}x{result.size}, "
        f"wrapper parity {result.parity_max_abs:.2g}) into {result.path}"
    )
    if load:
        from serving.server import TritonStartError, load_model

        try:
            serving = load_model(
                http_url=f"http://{settings.triton_host}:{settings.triton_http_port}",
                model_name=name,
            )
        except TritonStartError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Triton serves {name} versions {serving}")


@model_group.command("list")
@click.option("--repository", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(repository: Path | None, as_json: bool) -> None:
    """List the repository's models, their newest version and what marks them."""
    from moderation.ensemble import repository_models

    rows = repository_models(repository or load_settings().model_repository)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        flags = " demo-weights" if row["demo_weights"] else ""
        click.echo(f"{row['name']}\tv{row['version']}\t{row['size']}px{flags}\t{row['licence']}")

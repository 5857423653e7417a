"""The ``dfmod`` command line: one entry point, subcommands living beside the code they drive.

Commands are registered by dotted path and imported on first use, so ``dfmod api`` never imports
torch and ``dfmod train`` never imports Flask.
"""

from __future__ import annotations

import importlib
import logging

import click

from moderation.settings import load_settings, settings_table

# command name -> ("module:attribute", one-line help); each subsystem owns its own commands.
# The help is repeated here so that `dfmod --help` lists everything without importing torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("training.cli:demo_data", "Generate a deterministic synthetic real/fake set."),
    "genuine-photos": (
        "training.cli:genuine_photos",
        "Build a genuine-photo set from installed Debian packages' photographs.",
    ),
    "train": ("training.cli:train", "Train the detector on real/ + fake/ folders or a CSV."),
    "evaluate": ("training.cli:evaluate", "Evaluate a checkpoint and write a report folder."),
    "export": ("training.cli:export", "Export ONNX/TorchScript as a new model version."),
    "triton": ("serving.server:triton_command", "Run the bundled Triton server."),
    "scan": ("worker.scan:scan_command", "Score image files through Triton, no queue."),
    "worker": ("worker.cli:worker_command", "Run a Celery worker (scoring, fetches, callbacks)."),
    "beat": ("worker.cli:beat_command", "Run the scheduler that enqueues the periodic sweeper."),
    "sweep": ("worker.cli:sweep_command", "Run the sweeper once (stuck jobs, due callbacks)."),
    "up": ("worker.up:up_command", "Run the embedded stack: Triton, worker, API on SQLite."),
    "api": ("webhook_api.cli:api_command", "Run the webhook API with a multi-threaded server."),
    "migrate": ("webhook_api.cli:migrate_command", "Upgrade the database schema to the newest."),
    "tenant": ("webhook_api.cli:tenant_group", "Manage tenants (create prints the API key once)."),
    "labels": ("training.loop_cli:labels_group", "Export reviewed submissions as training data."),
    "retrain": ("training.loop_cli:retrain_command", "Retrain on review labels, gate, deploy N+1."),
    "rollback": ("training.loop_cli:rollback_command", "Serve the previous version again as N+1."),
    "model": (
        "worker.model_cli:model_group",
        "Import ONNX detectors with a manifest; list them.",
    ),
    "ensemble": (
        "training.ensemble_cli:ensemble_group",
        "Fit the calibrated ensemble of models.",
    ),
    "reviewer": ("moderation.reviewers:reviewer_group", "Manage dashboard reviewer accounts."),
    "bank": ("moderation.bank_cli:bank_group", "Manage known-media banks of PDQ hashes."),
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand only when it is invoked or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in COMMANDS]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            rows.append((name, command.get_short_help_str() if command else ""))
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


EXIT_CODES = """\b
Output: results go to standard output, every --json output one JSON document per line ending
with a newline; logs and hints go to standard error.

\b
Exit codes:
  0  success
  1  error: the message on standard error says what was wrong and what was expected
     (also: a server that `dfmod up` or `dfmod triton` runs stopped with an error)
  2  usage error (an unknown option, a bad argument); `dfmod scan`: a file was rejected
  3  `dfmod retrain`: the gate refused the challenger (nothing was written or deployed)
"""


@click.group(cls=LazyGroup, epilog=EXIT_CODES)
@click.option("--log-level", default=None, help="Logging level (default: DFMOD_LOG_LEVEL or INFO).")
def main(log_level: str | None) -> None:
    """dfmod: deepfake moderation backend."""
    level = (log_level or load_settings().log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command("settings")
def settings_command() -> None:
    """Print every DFMOD_* setting as a Markdown table."""
    click.echo(settings_table())


if __name__ == "__main__":
    main()

"""The committed repository: two built-in detectors, both demo weights, both deployed by compose."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from moderation.cli import main
from moderation.ensemble import latest_ensemble, servable_models
from moderation.settings import PROJECT_ROOT

REPOSITORY = PROJECT_ROOT / "model_repository"


def test_both_built_in_models_are_listed_as_demo_weights() -> None:
    result = CliRunner().invoke(main, ["model", "list", "--json", "--repository", str(REPOSITORY)])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {"deepfake_detector", "residual_detector"}
    assert all(row["demo_weights"] and row["size"] == 224 for row in rows.values())
    ensemble = latest_ensemble(REPOSITORY)
    assert ensemble is not None and ensemble.members == sorted(rows)


def test_compose_loads_every_model_of_the_repository() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["triton"]["command"]
    loaded = {c.split("=", 1)[1] for c in command if c.startswith("--load-model=")}
    assert loaded == set(servable_models(REPOSITORY))


def test_import_and_ensemble_work_without_torch() -> None:
    """The README's default install has no torch: the commands and the worker side import
    without it (torch is made unimportable in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['scipy'] = None\n"
        "import moderation.model_import, moderation.ensemble, training.ensemble_cli\n"
        "import worker.model_cli, moderation.tenant_models, worker.models, worker.scoring\n"
        "from moderation.ensemble import repository_models\n"
        f"print(len(repository_models({str(REPOSITORY)!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"

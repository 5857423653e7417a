"""docker-compose.yml agrees with the code: CLI commands, settings, ports, volumes, dependencies.

Docker is not available where the tests run, so the file is checked statically against the same
objects the processes use: the ``dfmod`` click group and :class:`moderation.settings.Settings`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from moderation.cli import main
from moderation.settings import PROJECT_ROOT, Settings, load_settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DFMOD_ROLES = ("migrate", "api", "worker", "beat")
SETTING_NAMES = {"DFMOD_" + f.name.upper() for f in fields(Settings)}
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Returns the value with ``${VAR:-default}`` replaced by its default, as compose would."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(_interpolate(v)) for k, v in (service.get("environment") or {}).items()}


def _settings(service: dict[str, Any]) -> Settings:
    return load_settings(environ=_env(service))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Returns container path -> source (named volume or host path) of a service."""
    result = {}
    for entry in service.get("volumes") or []:
        source, target, *_ = entry.split(":")
        result[target] = source
    return result


def _flag(command: list[str], name: str) -> str | None:
    for item in command:
        if item.startswith(f"--{name}="):
            return item.split("=", 1)[1]
    return None


def test_compose__dfmod_roles_run_existing_commands(services: dict[str, Any]) -> None:
    ctx = click.Context(main)
    for role in DFMOD_ROLES:
        service = services[role]
        assert service["build"] == "." and (PROJECT_ROOT / "Dockerfile").is_file()
        name, *args = service["command"]
        command = main.get_command(ctx, name)
        assert command is not None, f"{role}: `dfmod {name}` is not a dfmod command"
        # Parses the options exactly as the CLI would, without running the command.
        command.make_context(name, list(args), parent=ctx)


def test_compose__dockerfile_entrypoint_is_dfmod() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["dfmod"]' in text
    for package in ("moderation", "serving", "webhook_api", "worker"):
        assert f"COPY {package} ./{package}" in text


def test_compose__variables_are_settings(services: dict[str, Any]) -> None:
    for role in DFMOD_ROLES:
        env = _env(services[role])
        unknown = {k for k in env if k.startswith("DFMOD_")} - SETTING_NAMES
        assert not unknown, f"{role}: {sorted(unknown)} are not fields of Settings"
        _settings(services[role])  # every value coerces to its field's type


def test_compose__urls_point_at_services(services: dict[str, Any]) -> None:
    postgres_env = services["postgres"]["environment"]
    for role in DFMOD_ROLES:
        settings = _settings(services[role])
        db = urlsplit(settings.resolved_database_url)
        assert (db.scheme, db.hostname, db.port) == ("postgresql+psycopg", "postgres", 5432)
        assert db.username == postgres_env["POSTGRES_USER"]
        assert db.password == _interpolate(postgres_env["POSTGRES_PASSWORD"])
        assert db.path.lstrip("/") == postgres_env["POSTGRES_DB"]
        assert urlsplit(settings.resolved_broker_url).hostname == "redis"
        assert settings.triton_host == "triton"


def test_compose__ports_agree(services: dict[str, Any]) -> None:
    api = _settings(services["api"])
    published = [str(p) for p in services["api"]["ports"]]
    assert f"{api.api_port}:{api.api_port}" in published
    assert api.api_host == "0.0.0.0"
    assert f":{api.api_port}/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    triton_cmd = services["triton"]["command"]
    for role in ("api", "worker"):
        settings = _settings(services[role])
        assert _flag(triton_cmd, "grpc-port") == str(settings.triton_grpc_port)
        assert _flag(triton_cmd, "http-port") == str(settings.triton_http_port)
        assert _flag(triton_cmd, "metrics-port") == str(settings.triton_metrics_port)


def test_compose__healthcheck_path_is_served() -> None:
    from webhook_api import create_app

    app = create_app(load_settings(environ={}, database_url="sqlite://"))
    assert "/healthz" in {rule.rule for rule in app.url_map.iter_rules()}


def test_compose__volumes_agree(compose: dict[str, Any], services: dict[str, Any]) -> None:
    worker, api = _settings(services["worker"]), _settings(services["api"])
    worker_mounts, api_mounts = _mounts(services["worker"]), _mounts(services["api"])
    # Blobs written by the API are read by the worker: the same volume at the data folder.
    assert str(api.data_dir) in api_mounts and str(worker.data_dir) in worker_mounts
    assert api_mounts[str(api.data_dir)] == worker_mounts[str(worker.data_dir)]
    assert api_mounts[str(api.data_dir)] in compose["volumes"]
    # The worker reads metadata.json from the same repository Triton serves.
    triton_mounts = _mounts(services["triton"])
    triton_repo = _flag(services["triton"]["command"], "model-repository")
    assert triton_repo is not None
    assert worker_mounts[str(worker.model_repository)] == triton_mounts[triton_repo]
    assert Path(PROJECT_ROOT / triton_mounts[triton_repo]).resolve() == (
        PROJECT_ROOT / "model_repository"
    )
    assert (PROJECT_ROOT / "model_repository" / worker.model_name / "config.pbtxt").is_file()


def test_compose__triton_is_ngc_on_gpu_with_explicit_control(services: dict[str, Any]) -> None:
    triton = services["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-control-mode=explicit" in triton["command"]
    assert _flag(triton["command"], "load-model") == _settings(services["worker"]).model_name
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert "healthcheck" in triton


def test_compose__startup_order(services: dict[str, Any]) -> None:
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for role in ("api", "worker", "beat"):
        depends = services[role]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["triton"]["condition"] == "service_healthy"


def _validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """Runs check-jsonschema with the Compose specification's schema it ships (no Docker)."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = _validate_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_validator_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check is real: a misspelt key and a wrong type are refused."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["api"]["healthcheck"]["retires"] = 6
    broken["services"]["worker"]["deploy"]["replicas"] = "two"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _validate_compose(path)
    assert result.returncode != 0 and "retires" in result.stdout + result.stderr


def test_compose_runs_two_api_processes_and_two_named_workers(services: dict[str, Any]) -> None:
    assert _interpolate(services["api"]["environment"]["DFMOD_API_WORKERS"]) == "2"
    assert _interpolate(services["worker"]["deploy"]["replicas"]) == "2"
    command = services["worker"]["command"]
    assert command[command.index("--hostname") + 1] == "worker@%h"  # %h: the container's name

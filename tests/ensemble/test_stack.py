"""Several models through the real stack: Triton serving three models (the two built-ins and one
imported from a plain NCHW ImageNet-normalised ONNX file), the API and a Celery worker on SQLite.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from moderation.cli import main
from moderation.model_import import import_model
from serving.server import TritonServer
from tests.ensemble import third_party
from tests.fixtures.media import image_bytes
from tests.fixtures.stack import Stack, embedded_stack, triton_env
from tests.fixtures.triton import COMMITTED_REPOSITORY, private_server

pytestmark = pytest.mark.integration

BUILT_IN = ["deepfake_detector", "residual_detector"]
SCORED = {"auto_passed", "auto_flagged", "needs_review"}


def _prepare(work: Path) -> Any:
    def prepare(repository: Path) -> None:
        for name in ("residual_detector", "_ensemble"):
            shutil.copytree(
                COMMITTED_REPOSITORY / name,
                repository / name,
                ignore=shutil.ignore_patterns("checkpoint.pt"),
            )
        onnx_file = third_party.export(work / "third.onnx")
        manifest = third_party.write_manifest(work / "third.yaml")
        import_model(
            name="third", onnx_path=onnx_file, manifest_path=manifest, repository=repository
        )

    return prepare


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("ensemble-triton")
    with private_server(root, prepare=_prepare(root)) as server:
        yield server


@pytest.fixture(scope="module")
def stack(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ensemble-stack")
    with embedded_stack(root, triton_env(triton)) as started:
        yield started


def _scored(stack: Stack, key: str, seed: int) -> dict[str, Any]:
    response = stack.submit_file(
        key, image_bytes((200, 160), fmt="JPEG", seed=seed, quality=90), filename="p.jpg"
    )
    assert response.status_code == 202, response.text
    final = stack.wait_final(key, response.json()["id"])
    assert final["status"] in SCORED and final["failure"] is None, final
    return final


def _cli(stack: Stack, triton: TritonServer, *args: str) -> Any:
    env = {
        "DFMOD_DATABASE_URL": stack.database_url,
        "DFMOD_MODEL_REPOSITORY": str(triton.repository),
    }
    return CliRunner().invoke(main, list(args), env=env)


def _logit(p: float) -> float:
    q = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(q / (1 - q))


def test_every_enabled_model_answers_and_the_fitted_ensemble_gives_p_fake(
    stack: Stack, triton: TritonServer
) -> None:
    tenant = stack.tenant()
    verdict = _scored(stack, tenant.api_key, seed=1)["verdict"]
    models = verdict["models"]
    assert [m["name"] for m in models] == [*BUILT_IN, "third"]
    for m in models:
        assert m["version"] == "1" and 0.0 <= m["p_fake"] <= 1.0 and m["latency_ms"] > 0, m
    ensemble = verdict["ensemble"]
    latest = max(int(p.name) for p in (triton.repository / "_ensemble").iterdir())
    assert (ensemble["combination"], ensemble["version"], ensemble["partial"]) == (
        "fitted",
        latest,
        False,
    )
    # The imported model is not a member of the ensemble: reported, not weighted.
    assert set(ensemble["weights"]) == set(BUILT_IN)
    artefact = json.loads(
        (triton.repository / "_ensemble" / str(latest) / "ensemble.json").read_text()
    )
    full = artefact["combinations"]["+".join(BUILT_IN)]
    z = full["bias"] + sum(full["weights"][m["name"]] * _logit(m["p_fake"]) for m in models[:2])
    assert verdict["p_fake"] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-9)
    assert verdict["model"] == {"name": "deepfake_detector", "version": "1"}
    assert ensemble["stale"] is False  # fitted on the versions that answered
    # Both members are demo weights: they never auto-decide on their own.
    assert ensemble["demo_only"] is True
    assert verdict["decision"] == "needs_review"
    assert verdict["decision_reason"] in ("model", "demo_model_review")


def test_a_tenant_without_the_imported_model(stack: Stack, triton: TritonServer) -> None:
    tenant = stack.tenant()
    name = _tenant_name(stack, tenant.id)
    result = _cli(stack, triton, "tenant", "set-models", name, "--models", ",".join(BUILT_IN))
    assert result.exit_code == 0, result.output
    verdict = _scored(stack, tenant.api_key, seed=2)["verdict"]
    assert [m["name"] for m in verdict["models"]] == BUILT_IN
    refused = _cli(stack, triton, "tenant", "set-models", name, "--models", "nope")
    assert refused.exit_code == 1 and "unknown models ['nope']" in refused.output
    # The other tenants still get every model.
    other = _scored(stack, stack.tenant().api_key, seed=3)["verdict"]
    assert [m["name"] for m in other["models"]] == [*BUILT_IN, "third"]


def test_a_lying_manifest_is_refused_and_nothing_changes(
    stack: Stack, triton: TritonServer, tmp_path: Path
) -> None:
    onnx_file = third_party.export(tmp_path / "fourth.onnx")
    manifest = third_party.write_manifest(tmp_path / "lie.yaml", input={"layout": "NHWC"})
    result = _cli(
        stack, triton, "model", "import", "fourth", str(onnx_file), "--manifest", str(manifest)
    )
    assert result.exit_code == 1
    assert "refused: manifest input.layout is NHWC (3 channels on axis 3)" in result.output
    assert not (triton.repository / "fourth").exists()


def test_a_model_that_is_down_gives_a_partial_verdict(stack: Stack, triton: TritonServer) -> None:
    _post(f"{triton.http_url}/v2/repository/models/residual_detector/unload")
    try:
        verdict = _scored(stack, stack.tenant().api_key, seed=4)["verdict"]
        by_name = {m["name"]: m for m in verdict["models"]}
        assert by_name["residual_detector"]["p_fake"] is None
        assert by_name["residual_detector"]["error"] == "unavailable"
        assert by_name["deepfake_detector"]["p_fake"] is not None
        ensemble = verdict["ensemble"]
        assert ensemble["partial"] is True and ensemble["missing"] == ["residual_detector"]
        # The combination fitted for exactly the members that answered.
        assert ensemble["combination"] == "fitted"
        assert set(ensemble["weights"]) == {"deepfake_detector"}
    finally:
        _post(f"{triton.http_url}/v2/repository/models/residual_detector/load")


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def _tenant_name(stack: Stack, tenant_id: str) -> str:
    from moderation.models import Tenant

    with stack.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return tenant.name


def test_a_model_imported_under_a_running_stack_joins_the_next_verdicts(
    stack: Stack, triton: TritonServer, tmp_path: Path
) -> None:
    onnx_file = third_party.export(tmp_path / "fifth.onnx", layout="NHWC", size=64, sigmoid=True)
    manifest = third_party.write_manifest(
        tmp_path / "fifth.yaml",
        input={"layout": "NHWC", "size": 64, "normalisation": "none", "resize": "bicubic"},
        output={"meaning": "probability"},
    )
    env_args = ("model", "import", "fifth", str(onnx_file), "--manifest", str(manifest), "--load")
    result = CliRunner().invoke(
        main,
        list(env_args),
        env={
            "DFMOD_MODEL_REPOSITORY": str(triton.repository),
            "DFMOD_TRITON_HTTP_PORT": str(triton.http_port),
        },
    )
    assert result.exit_code == 0, result.output
    assert "Triton serves fifth versions ['1']" in result.output
    key = stack.tenant().api_key
    deadline = time.monotonic() + 90
    seed = 10
    while True:  # the worker lists the repository's models again within 10 s
        models = {m["name"]: m for m in _scored(stack, key, seed)["verdict"]["models"]}
        if models.get("fifth", {}).get("p_fake") is not None:
            break
        assert time.monotonic() < deadline, models
        seed += 1
    assert models["fifth"]["version"] == "1"

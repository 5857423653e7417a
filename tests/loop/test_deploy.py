"""Deploy and rollback against a real Triton: N+1 serves and is recorded; a broken N+1 is refused.

These tests run their own server (not the shared session one) because they add versions to its
repository.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from moderation import contract
from moderation.db import session_scope
from moderation.models import ModelVersion
from moderation.version_folders import version_numbers
from serving.client import TritonClient
from serving.server import TritonServer
from tests.fixtures.triton import private_server
from tests.serving.onnx_edit import shift_logits
from training.deploy import (
    DeployError,
    ServingTarget,
    deploy,
    live_version,
    rollback,
)

pytestmark = pytest.mark.integration

SHIFT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with private_server(tmp_path_factory.mktemp("triton-deploy")) as started:
        yield started


@pytest.fixture()
def target(server: TritonServer) -> ServingTarget:
    return ServingTarget(
        repository=server.repository,
        model_name=contract.MODEL_NAME,
        http_url=server.http_url,
        grpc_url=server.grpc_url,
    )


def _answer(target: ServingTarget) -> tuple[str, float]:
    image = np.random.default_rng(5).integers(0, 256, (1, *contract.INPUT_SHAPE), dtype=np.uint8)
    client = TritonClient(target.grpc_url, timeout_s=30.0)
    try:
        result = client.infer(image)
    finally:
        client.close()
    return result.model_version, float(result.logits[0])


def _candidate(target: ServingTarget, folder: Path, *, delta: float) -> Path:
    live = target.model_dir / str(version_numbers(target.model_dir)[-1])
    shift_logits(live / contract.ONNX_FILENAME, folder / contract.ONNX_FILENAME, delta=delta)
    shutil.copy2(live / contract.METADATA_FILENAME, folder / contract.METADATA_FILENAME)
    return folder


def test_deploy_then_rollback(
    target: ServingTarget, database: tuple[str, sessionmaker[Session]], tmp_path: Path
) -> None:
    before_version, before = _answer(target)
    source = _candidate(target, tmp_path / "candidate", delta=SHIFT)
    with session_scope(database[1]) as session:
        row = deploy(
            session=session,
            source=source,
            target=target,
            deployed_by="ops@example",
            metrics={"holdout": {"roc_auc": 0.9}},
        )
    new = int(row.version)
    assert new == int(before_version) + 1
    version, logit = _answer(target)
    assert version == str(new) and logit == pytest.approx(before + SHIFT, abs=1e-3)
    assert contract.ModelMetadata.read(target.model_dir / str(new)).version == new
    assert not list(target.model_dir.glob(".*.staging"))  # no temporary folder left behind

    with session_scope(database[1]) as session:
        back = rollback(session=session, target=target, deployed_by="oncall")
    assert int(back.version) == new + 1
    version, logit = _answer(target)
    assert version == str(new + 1) and logit == pytest.approx(before, abs=1e-3)
    with session_scope(database[1]) as session:
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.deployed_at)).all()
        assert [(r.version, r.live, r.deployed_by) for r in rows] == [
            (str(new), False, "ops@example"),
            (str(new + 1), True, "oncall"),
        ]
        assert rows[1].metrics["weights_of"] == int(before_version)
        live = live_version(session, model_name=contract.MODEL_NAME)
        assert live is not None and live.version == str(new + 1)


def test_broken_version_is_refused_and_live_keeps_serving(
    target: ServingTarget, database: tuple[str, sessionmaker[Session]], tmp_path: Path
) -> None:
    before_version, before = _answer(target)
    source = _candidate(target, tmp_path / "broken", delta=0.0)
    (source / contract.ONNX_FILENAME).write_bytes(b"this is not an ONNX model")
    with session_scope(database[1]) as session, pytest.raises(DeployError, match="did not serve"):
        deploy(session=session, source=source, target=target, deployed_by="ops", metrics={})
    assert _answer(target) == (before_version, pytest.approx(before, abs=1e-6))
    assert version_numbers(target.model_dir)[-1] == int(before_version)
    assert (target.model_dir / f".{int(before_version) + 1}.failed").is_dir()
    with session_scope(database[1]) as session:
        assert session.scalars(select(ModelVersion)).all() == []


def test_cli_rollback(
    server: TritonServer,
    target: ServingTarget,
    database: tuple[str, sessionmaker[Session]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from moderation.cli import main
    from tests.fixtures.stack import triton_env

    _, before = _answer(target)
    source = _candidate(target, tmp_path / "candidate", delta=-1.0)
    with session_scope(database[1]) as session:
        new = int(
            deploy(
                session=session, source=source, target=target, deployed_by="ops", metrics={}
            ).version
        )
    assert _answer(target)[1] == pytest.approx(before - 1.0, abs=1e-3)
    for name, value in {**triton_env(server), "DFMOD_DATABASE_URL": database[0]}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["rollback", "--by", "oncall"])
    assert result.exit_code == 0, result.output
    assert f"version {new + 1} serves" in result.output
    version, logit = _answer(target)
    assert version == str(new + 1) and logit == pytest.approx(before, abs=1e-3)


def test_version_without_cam_is_refused_with_how_to_fix(
    target: ServingTarget, database: tuple[str, sessionmaker[Session]], tmp_path: Path
) -> None:
    import onnx

    source = _candidate(target, tmp_path / "old-style", delta=0.0)
    model = onnx.load(str(source / contract.ONNX_FILENAME))
    kept = [o for o in model.graph.output if o.name != contract.CAM_NAME]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(source / contract.ONNX_FILENAME))
    before = version_numbers(target.model_dir)
    with session_scope(database[1]) as session, pytest.raises(DeployError, match="reexport"):
        deploy(session=session, source=source, target=target, deployed_by="ops", metrics={})
    assert version_numbers(target.model_dir) == before

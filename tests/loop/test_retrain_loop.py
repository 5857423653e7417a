"""The loop on CPU with tiny data: submissions → reviews → labels export → retrain → N+1 serves.

A real API + Celery worker (embedded stack) scores on a real Triton while ``dfmod retrain`` trains
one epoch from the live version's checkpoint, gates it on a fixed holdout and deploys it: every
submission reaches a verdict, those sent after the deploy carry the new version. A challenger held
to an impossible margin is refused and the live version is unchanged.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from moderation import contract
from moderation.cli import main
from moderation.models import ModelVersion
from moderation.reviews import add_review
from moderation.settings import PROJECT_ROOT
from moderation.version_folders import version_numbers
from serving.server import TritonServer
from tests.fixtures.stack import Stack, embedded_stack, triton_env
from tests.fixtures.triton import private_server
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration

LIVE = PROJECT_ROOT / "model_repository" / contract.MODEL_NAME / "1"


def _with_live_checkpoint(repository: Path) -> None:
    if (LIVE / "checkpoint.pt").is_file():  # so the retrain can start from the live weights
        shutil.copy2(LIVE / "checkpoint.pt", repository / contract.MODEL_NAME / "1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("triton-loop")
    with private_server(root, prepare=_with_live_checkpoint) as started:
        yield started


@pytest.fixture(scope="module")
def stack(server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = embedded_stack(tmp_path_factory.mktemp("loop-stack"), triton_env(server))
    with started:
        yield started


class Submitter:
    """Submits one image every ``interval_s`` in the background, recording (sent_at, id)."""

    def __init__(self, stack: Stack, key: str, images: list[bytes], interval_s: float) -> None:
        self.sent: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._args = (stack, key, images, interval_s)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stack, key, images, interval_s = self._args
        index = 0
        while not self._stop.is_set():
            sent_at = time.monotonic()
            response = stack.submit_file(key, images[index % len(images)], filename="a.jpg")
            if response.status_code != 202:
                self.errors.append(f"{response.status_code} {response.text}")
            else:
                self.sent.append((sent_at, response.json()["id"]))
            index += 1
            self._stop.wait(interval_s)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _version(body: dict) -> str:
    assert body["status"] != "failed" and body["verdict"] is not None, body
    return str(body["verdict"]["model"]["version"])


def _review_all(stack: Stack, labelled: dict[str, str]) -> None:
    with stack.session() as session:
        for sid, label in labelled.items():
            add_review(session, submission_id=sid, reviewer="ana", label=label)


def _cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + (repr(result.exception) if result.exception else "")


def _retrain_args(data: dict[str, Path], labels: Path, out: Path) -> list[str]:
    return [
        "retrain",
        *("--labels", str(labels), "--base", str(data["base"]), "--holdout", str(data["holdout"])),
        *("--out", str(out), "--epochs", "1", "--batch-size", "8", "--threads", "1"),
        *("--by", "ci"),
    ]


def test_reviews_retrain_deploy_while_scoring_then_refuse_worse(
    server: TritonServer,
    stack: Stack,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_dir = server.repository / contract.MODEL_NAME
    live = version_numbers(model_dir)[-1]
    tenant = stack.tenant()
    reviewed = sorted(tiny_data["reviewed"].rglob("*.jpg"))
    labelled = {}
    for path in reviewed:
        response = stack.submit_file(tenant.api_key, path.read_bytes(), filename=path.name)
        assert response.status_code == 202, response.text
        labelled[response.json()["id"]] = path.parent.name
    for sid in labelled:
        assert _version(stack.wait_final(tenant.api_key, sid)) == str(live)
    _review_all(stack, labelled)

    env = {
        **triton_env(server),
        "DFMOD_DATABASE_URL": stack.database_url,
        "DFMOD_DATA_DIR": str(stack.root / "data"),
    }
    code, output = _cli(monkeypatch, env, "labels", "export", str(tmp_path / "labels"))
    assert code == 0 and f"{len(labelled)} images (6 real, 6 fake)" in output, output

    images = [p.read_bytes() for p in reviewed]
    with Submitter(stack, tenant.api_key, images, interval_s=0.5) as submitter:
        wait_until(lambda: submitter.sent or submitter.errors, timeout_s=30)  # traffic flows
        # A 16-image holdout moves balanced accuracy in steps of 1/16: margins wide enough that
        # this run tests the deploy path, not whether one epoch improves the model.
        args = _retrain_args(tiny_data, tmp_path / "labels", tmp_path / "run")
        code, output = _cli(monkeypatch, env, *args, "--margin-auc", "0.1", "--margin-bacc", "0.2")
        deployed_at = time.monotonic()
        assert code == 0, output
        wait_until(
            lambda: submitter.errors or any(t > deployed_at for t, _ in submitter.sent),
            timeout_s=30,
            message="no submission was sent after the deploy",
        )
    assert f"deployed version {live + 1} (was {live})" in output, output
    assert not submitter.errors and len(submitter.sent) >= 3
    after = [sid for sent_at, sid in submitter.sent if sent_at > deployed_at]
    assert after, "no submission was sent after the deploy"
    versions = {sid: _version(stack.wait_final(tenant.api_key, sid)) for _, sid in submitter.sent}
    assert set(versions.values()) <= {str(live), str(live + 1)}
    assert {versions[sid] for sid in after} == {str(live + 1)}

    rows = _model_versions(stack)
    assert [(r.version, r.live, r.deployed_by) for r in rows] == [(str(live + 1), True, "ci")]
    assert rows[0].metrics["replaces"] == live and "roc_auc" in rows[0].metrics["holdout"]
    meta = contract.ModelMetadata.read(model_dir / str(live + 1))
    assert (
        meta.extra["retrain"]["init_from"].endswith(f"{live}/checkpoint.pt")
        or not (LIVE / "checkpoint.pt").is_file()
    )

    # A challenger that must beat live by a whole unit of AUC is refused; nothing changes.
    args = _retrain_args(tiny_data, tmp_path / "labels", tmp_path / "run2")
    code, output = _cli(monkeypatch, env, *args, "--margin-auc", "-1", "--margin-bacc", "-1")
    assert code == 3 and "REFUSED" in output, output
    assert version_numbers(model_dir)[-1] == live + 1
    assert [(r.version, r.live) for r in _model_versions(stack)] == [(str(live + 1), True)]
    response = stack.submit_file(tenant.api_key, images[0], filename="b.jpg")
    assert _version(stack.wait_final(tenant.api_key, response.json()["id"])) == str(live + 1)


def _model_versions(stack: Stack) -> list[ModelVersion]:
    with stack.session() as session:
        return list(session.scalars(select(ModelVersion).order_by(ModelVersion.deployed_at)))

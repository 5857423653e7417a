"""The ensemble's maths, its fit command, how the worker scores several models, demo weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moderation.cli import main
from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.ensemble import (
    Ensemble,
    ModelScore,
    combine_scores,
    fit_combinations,
    fit_logistic,
    latest_ensemble,
    write_ensemble,
)
from moderation.model_import import import_model
from moderation.submissions import get_submission
from serving.client import InferenceResult, InferenceUnavailable
from tests.ensemble import third_party
from tests.fixtures.media import image_bytes
from tests.fixtures.worker import WorkerEnv
from worker import scoring
from worker.models import MODEL_FAILURES, get_model_set


def test_fit_logistic_recovers_the_generating_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2)) * 2
    y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 + 1.5 * x[:, 0] - 0.7 * x[:, 1])))).astype(float)
    weights, bias = fit_logistic(x, y, l2=0.0)
    assert weights == pytest.approx([1.5, -0.7], abs=0.15) and bias == pytest.approx(0.5, abs=0.15)


def test_one_combination_per_subset_and_the_score_of_those_that_answered() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    z = {"a": labels * 2.0 - 1 + rng.normal(size=300), "b": rng.normal(size=300)}
    combinations = fit_combinations(z, labels)
    assert set(combinations) == {"a", "b", "a+b"}
    ensemble = Ensemble(version=3, members=["a", "b"], combinations=combinations)
    both = ensemble.combine({"a": 1.0, "b": -1.0, "other": 5.0})
    assert both is not None and set(both[1]) == {"a", "b"}
    c = combinations["a+b"]
    expected = 1 / (1 + math.exp(-(c["bias"] + c["weights"]["a"] - c["weights"]["b"])))
    assert both[0] == pytest.approx(expected)
    only_a = ensemble.combine({"a": 1.0})
    assert only_a is not None and set(only_a[1]) == {"a"}
    assert ensemble.combine({"other": 1.0}) is None


def _score(name: str, p: float, demo: bool = False) -> ModelScore:
    return ModelScore(name, "1", p, 0.3, 0.8, demo)


def test_combining_scores_single_mean_and_fitted(tmp_path: Path) -> None:
    single = combine_scores([_score("a", 0.9, demo=True)], None)
    assert (single.p_fake, single.combination, single.demo_only) == (0.9, "single", True)
    mean = combine_scores([_score("a", 0.9, demo=True), _score("b", 0.5)], None)
    assert (mean.p_fake, mean.combination, mean.demo_only) == (0.7, "mean", False)
    ensemble = Ensemble(
        version=2,
        members=["a", "b"],
        combinations={
            "a": {"weights": {"a": 1.0}, "bias": 0.0},
            "b": {"weights": {"b": 1.0}, "bias": 0.0},
            "a+b": {"weights": {"a": 2.0, "b": 0.0}, "bias": 0.0},
        },
        pass_below=0.1,
        flag_at=0.95,
    )
    write_ensemble(tmp_path, ensemble)
    loaded = latest_ensemble(tmp_path)
    assert loaded == ensemble
    fitted = combine_scores([_score("a", 0.75, demo=True), _score("b", 0.1)], loaded)
    assert fitted.p_fake == pytest.approx(0.9) and fitted.combination == "fitted"
    assert (fitted.pass_below, fitted.flag_at, fitted.ensemble_version) == (0.1, 0.95, 2)
    # b carries no weight: only demo weights contributed.
    assert fitted.demo_only is True
    assert fitted.stale is False
    refitted = Ensemble(**{**ensemble.__dict__, "fitted_on": {"model_versions": {"a": 0}}})
    assert combine_scores([_score("a", 0.75), _score("b", 0.1)], refitted).stale is True
    # A corrupt artefact is logged and the models are averaged, never every item failed.
    (tmp_path / "_ensemble" / "3").mkdir()
    (tmp_path / "_ensemble" / "3" / "ensemble.json").write_text("{not json")
    assert latest_ensemble(tmp_path) is None


def _jpeg(seed: int) -> bytes:
    return image_bytes((90, 80), fmt="JPEG", seed=seed)


def test_ensemble_fit_scores_a_holdout_with_each_served_graph(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name, kwargs, manifest in (
        ("one", {}, {}),
        (
            "two",
            {"layout": "NHWC", "size": 64, "sigmoid": True},
            {
                "input": {"layout": "NHWC", "size": 64, "normalisation": "none"},
                "output": {"meaning": "probability"},
            },
        ),
    ):
        onnx_file = third_party.export(tmp_path / f"{name}.onnx", **kwargs)
        yaml_file = third_party.write_manifest(tmp_path / f"{name}.yaml", **manifest)
        import_model(name=name, onnx_path=onnx_file, manifest_path=yaml_file, repository=repo)
    holdout = tmp_path / "holdout"
    for label in ("real", "fake"):
        (holdout / label).mkdir(parents=True)
        for i in range(15):
            (holdout / label / f"{i}.jpg").write_bytes(_jpeg(i + (100 if label == "fake" else 0)))
    (holdout / "fake" / "broken.jpg").write_bytes(b"not an image")
    args = ["ensemble", "fit", "--holdout", str(holdout), "--repository", str(repo)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    artefact = json.loads((repo / "_ensemble" / "1" / "ensemble.json").read_text())
    assert artefact["members"] == ["one", "two"]
    assert set(artefact["combinations"]) == {"one", "two", "one+two"}
    assert artefact["fitted_on"]["images"] == 30 and artefact["fitted_on"]["check"] == 15
    assert set(artefact["metrics"]) >= {"one", "two", "ensemble"}
    again = CliRunner().invoke(main, [*args, "--models", "one"])
    assert again.exit_code == 0 and (repo / "_ensemble" / "2" / "ensemble.json").is_file()
    genuine = tmp_path / "genuine"
    (genuine / "real").mkdir(parents=True)
    rows = ["path,label,split"]
    for i in range(8):
        (genuine / "real" / f"{i}.jpg").write_bytes(_jpeg(500 + i))
        rows.append(f"real/{i}.jpg,0,{'val' if i < 4 else 'test'}")
    (genuine / "manifest.csv").write_text("\n".join(rows) + "\n")
    chosen = CliRunner().invoke(main, [*args, "--genuine", str(genuine / "manifest.csv")])
    assert chosen.exit_code == 0, chosen.output
    third = json.loads((repo / "_ensemble" / "3" / "ensemble.json").read_text())
    thresholds = third["metrics"]["thresholds"]
    assert (third["pass_below"], third["flag_at"]) == (
        thresholds["pass_below"],
        thresholds["flag_at"],
    )
    assert thresholds["reported_on"]["genuine"] == 4 and thresholds["chosen_on"]["genuine"] == 4
    unknown = CliRunner().invoke(main, [*args, "--models", "nope"])
    assert unknown.exit_code == 1 and "unknown models ['nope']" in unknown.output


# -- scoring with several models, through the worker's scoring on stub clients -----------------


class Stub:
    def __init__(self, name: str, logit: float, *, fail: bool = False) -> None:
        self.model_name, self.logit, self.fail = name, logit, fail
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, images: np.ndarray) -> InferenceResult:
        self.shapes.append(images.shape)
        if self.fail:
            raise InferenceUnavailable(f"{self.model_name} is not ready")
        return InferenceResult(
            np.array([self.logit] * len(images), np.float32), self.model_name, "1"
        )

    def close(self) -> None:
        pass


def _repo(tmp_path: Path, *, demo: bool, second: bool = False, second_size: int = 224) -> Path:
    repo = tmp_path / "repo"
    names = ["deepfake_detector", *(["residual_detector"] if second else [])]
    for name in names:
        version = repo / name / "1"
        version.mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text("")
        (version / "model.onnx").write_bytes(b"")
        extra: dict[str, object] = {"demo_weights": demo}
        if name == "residual_detector":
            extra["input_size"] = second_size
        ModelMetadata(version=1, pass_below=0.2, flag_at=0.9, extra=extra).write(version)
    return repo


def _run(env: WorkerEnv, stubs: list[Stub], data: bytes | None = None, **changes: object) -> dict:
    settings = env.settings.replace(**changes)
    models = get_model_set(settings)
    for stub in stubs[1:]:
        models._clients[stub.model_name] = stub  # type: ignore[assignment]
    models._skip_until.clear()
    sub_id = env.submission(blob_sha256=env.blobs.put(data or _jpeg(7)))
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=stubs[0],  # type: ignore[arg-type]
        settings=settings,
    )
    assert result.outcome is scoring.Outcome.SCORED
    with session_scope(env.session_factory) as session:
        view = get_submission(session=session, submission_id=sub_id, tenant_id=None)
        assert view is not None
        return view.to_json()["verdict"]


def test_demo_weights_never_decide_alone_unless_the_operator_opts_out(
    worker_env: WorkerEnv,
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path, demo=True)
    flagged = _run(worker_env, [Stub("deepfake_detector", 5.0)], model_repository=repo)
    assert (flagged["decision"], flagged["decision_reason"]) == (
        "needs_review",
        "demo_model_review",
    )
    assert flagged["p_fake"] == pytest.approx(1 / (1 + math.exp(-5.0)))
    assert flagged["ensemble"]["combination"] == "single" and flagged["ensemble"]["demo_only"]
    passed = _run(worker_env, [Stub("deepfake_detector", -5.0)], model_repository=repo)
    assert (passed["decision"], passed["decision_reason"]) == ("needs_review", "demo_model_review")
    opted_out = _run(
        worker_env, [Stub("deepfake_detector", 5.0)], model_repository=repo, demo_weights_decide=1
    )
    assert (opted_out["decision"], opted_out["decision_reason"]) == ("auto_flagged", "model")


def test_not_demo_weights_decide(worker_env: WorkerEnv, tmp_path: Path) -> None:
    repo = _repo(tmp_path, demo=False)
    verdict = _run(worker_env, [Stub("deepfake_detector", 5.0)], model_repository=repo)
    assert (verdict["decision"], verdict["decision_reason"]) == ("auto_flagged", "model")
    assert [m["name"] for m in verdict["models"]] == ["deepfake_detector"]


def test_a_failing_second_model_gives_a_partial_verdict_not_a_lost_item(
    worker_env: WorkerEnv,
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path, demo=False, second=True)
    stubs = [Stub("deepfake_detector", 5.0), Stub("residual_detector", 0.0, fail=True)]
    failures = MODEL_FAILURES.labels("residual_detector")._value.get()
    verdict = _run(worker_env, stubs, model_repository=repo)
    assert MODEL_FAILURES.labels("residual_detector")._value.get() == failures + 1
    assert verdict["ensemble"]["partial"] is True
    assert verdict["ensemble"]["missing"] == ["residual_detector"]
    assert [m["p_fake"] is None for m in verdict["models"]] == [False, True]
    assert verdict["decision"] == "auto_flagged"
    both = _run(
        worker_env,
        [Stub("deepfake_detector", 2.0), Stub("residual_detector", 0.0)],
        model_repository=repo,
    )
    assert both["ensemble"]["combination"] == "mean" and not both["ensemble"]["partial"]
    expected = (1 / (1 + math.exp(-2.0)) + 0.5) / 2
    assert both["p_fake"] == pytest.approx(expected)


def test_a_video_is_scored_by_each_model_at_its_own_size(
    worker_env: WorkerEnv,
    tmp_path: Path,
) -> None:
    from tests.video.media import colour_frames, encode

    repo = _repo(tmp_path, demo=False, second=True, second_size=64)
    stubs = [Stub("deepfake_detector", 3.0), Stub("residual_detector", -1.0)]
    video = encode(colour_frames(6))
    verdict = _run(worker_env, stubs, data=video, model_repository=repo, max_video_frames=4)
    assert [m["name"] for m in verdict["models"]] == ["deepfake_detector", "residual_detector"]
    (first,), (second,) = stubs[0].shapes, stubs[1].shapes
    assert first[1:] == (224, 224, 3) and second[1:] == (64, 64, 3) and first[0] == second[0]
    assert verdict["video"]["rule"] == "mean_top_k"
    assert verdict["ensemble"]["combination"] == "mean"

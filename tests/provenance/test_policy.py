"""The provenance signal in the decision: the policy, the worker's verdict row and the API view.

Triton is a stub here (these tests are about the decision); test_stack.py goes through the real
Triton, worker, broker and API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.models import Status
from moderation.policy import PROVENANCE_POLICIES, apply_provenance
from moderation.submissions import get_submission
from moderation.tenants import set_provenance_policy
from serving.client import InferenceResult
from tests.fixtures.media import image_bytes
from tests.fixtures.worker import WorkerEnv
from tests.provenance.signing import Chain, corrupt_manifest, sign
from worker import scoring

AI = {"manifest": "valid", "ai_generated": True}


@pytest.mark.parametrize(
    ("policy", "manifest", "flagged"),
    [
        ("trusted", "valid", True),
        ("trusted", "untrusted", False),
        ("trusted", "invalid", False),
        ("signed", "valid", True),
        ("signed", "untrusted", True),
        ("signed", "invalid", False),
        ("off", "valid", False),
    ],
)
def test_apply_provenance(policy: str, manifest: str, flagged: bool) -> None:
    decision, reason = apply_provenance(
        Status.AUTO_PASSED, {**AI, "manifest": manifest}, policy=policy
    )
    expected = ("auto_flagged", "provenance:ai_generated") if flagged else ("auto_passed", "model")
    assert (decision, reason) == expected


def test_apply_provenance__no_manifest_or_no_ai_claim__model_decides() -> None:
    assert apply_provenance("needs_review", None, policy="signed") == ("needs_review", "model")
    not_ai = {**AI, "ai_generated": False}
    assert apply_provenance("auto_passed", not_ai, policy="signed") == ("auto_passed", "model")


def test_apply_provenance__overrides_a_real_match_keeps_a_fake_match() -> None:
    real = apply_provenance("auto_passed", AI, policy="trusted", reason="bank_match:real")
    assert real == ("auto_flagged", "provenance:ai_generated")
    fake = apply_provenance("auto_flagged", AI, policy="trusted", reason="bank_match:fake")
    assert fake == ("auto_flagged", "bank_match:fake")
    untouched = apply_provenance("auto_passed", None, policy="trusted", reason="bank_match:real")
    assert untouched == ("auto_passed", "bank_match:real")


def test_apply_provenance__unknown_policy__names_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of trusted, signed, off"):
        apply_provenance("auto_passed", AI, policy="always")
    assert set(PROVENANCE_POLICIES) == {"trusted", "signed", "off"}


class LowStub:
    """Answers logit -6 (the model alone would pass the item)."""

    def infer(self, images: np.ndarray) -> InferenceResult:
        return InferenceResult(np.full(len(images), -6.0, np.float32), "deepfake_detector", "3")


@pytest.fixture()
def env(worker_env: WorkerEnv, tmp_path: Path, anchors_file: Path) -> WorkerEnv:
    version = tmp_path / "repo" / "deepfake_detector" / "3"
    version.mkdir(parents=True)
    ModelMetadata(version=3, temperature=1.0, pass_below=0.2, flag_at=0.9).write(version)
    worker_env.settings = worker_env.settings.replace(
        model_repository=tmp_path / "repo", c2pa_trust_anchors=str(anchors_file)
    )
    return worker_env


def _score(env: WorkerEnv, data: bytes) -> dict[str, Any]:
    sub_id = env.submission(blob_sha256=env.blobs.put(data))
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=LowStub(),  # type: ignore[arg-type]
        settings=env.settings,
    )
    assert result.outcome == scoring.Outcome.SCORED
    with session_scope(env.session_factory) as session:
        view = get_submission(session=session, submission_id=sub_id, tenant_id=None)
        assert view is not None
        return view.to_json()


def _tenant_policy(env: WorkerEnv, policy: str | None) -> None:
    from moderation.models import Tenant

    with session_scope(env.session_factory) as session:
        name = session.get(Tenant, env.tenant_id).name  # type: ignore[union-attr]
        set_provenance_policy(session=session, name=name, policy=policy)


def test_trusted_ai_manifest__flagged_ai_generated_model_still_recorded(
    env: WorkerEnv, chain: Chain
) -> None:
    body = _score(env, sign(image_bytes(fmt="JPEG"), "image/jpeg", chain))
    verdict = body["verdict"]
    assert body["status"] == verdict["decision"] == "auto_flagged"
    assert verdict["decision_reason"] == "provenance:ai_generated"
    assert verdict["label"] == "ai_generated"
    model = verdict["signals"]["model"]
    assert (model["label"], model["decision"], model["version"]) == ("real", "auto_passed", "3")
    assert model["p_fake"] == verdict["p_fake"] < 0.01
    assert verdict["signals"]["match"] is None
    assert verdict["signals"]["provenance"]["manifest"] == "valid"


def test_untrusted_signer__reported_model_decides_unless_tenant_accepts_signed(
    env: WorkerEnv, stranger: Chain
) -> None:
    signed = sign(image_bytes(fmt="JPEG", seed=1), "image/jpeg", stranger)
    verdict = _score(env, signed)["verdict"]
    assert (verdict["decision"], verdict["decision_reason"]) == ("auto_passed", "model")
    assert verdict["label"] == "real"
    assert verdict["signals"]["provenance"]["manifest"] == "untrusted"
    _tenant_policy(env, "signed")
    verdict = _score(env, signed)["verdict"]
    assert (verdict["decision"], verdict["decision_reason"]) == (
        "auto_flagged",
        "provenance:ai_generated",
    )


def test_tenant_policy_off__reported_never_decides(env: WorkerEnv, chain: Chain) -> None:
    _tenant_policy(env, "off")
    verdict = _score(env, sign(image_bytes(fmt="JPEG", seed=2), "image/jpeg", chain))["verdict"]
    assert (verdict["decision"], verdict["decision_reason"]) == ("auto_passed", "model")
    assert verdict["signals"]["provenance"]["ai_generated"] is True
    _tenant_policy(env, None)  # back to the global default: trusted
    verdict = _score(env, sign(image_bytes(fmt="JPEG", seed=3), "image/jpeg", chain))["verdict"]
    assert verdict["decision_reason"] == "provenance:ai_generated"


def test_corrupted_manifest__invalid_and_still_a_verdict(env: WorkerEnv, chain: Chain) -> None:
    body = _score(env, corrupt_manifest(sign(image_bytes(fmt="JPEG", seed=4), "image/jpeg", chain)))
    assert body["status"] == "auto_passed"
    assert body["verdict"]["signals"]["provenance"]["manifest"] == "invalid"
    assert body["verdict"]["decision_reason"] == "model"


def test_no_manifest__provenance_null(env: WorkerEnv) -> None:
    verdict = _score(env, image_bytes())["verdict"]
    assert verdict["signals"]["provenance"] is None and verdict["decision_reason"] == "model"


def test_set_provenance_policy__unknown_name_or_policy(env: WorkerEnv) -> None:
    with session_scope(env.session_factory) as session:
        with pytest.raises(LookupError, match="no tenant named 'nobody'"):
            set_provenance_policy(session=session, name="nobody", policy="off")
        with pytest.raises(ValueError, match="expected one of trusted, signed, off"):
            set_provenance_policy(session=session, name="nobody", policy="sometimes")

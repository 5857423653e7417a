"""The decision from several signals: bank matches per tenant policy, then provenance, and
hashes of media that cannot be hashed."""

from __future__ import annotations

import pytest

from moderation.banks import Policy
from moderation.mediahash import InvalidHash, hamming, normalize_hex, video_hash
from moderation.signal_policy import decide_with_signals


@pytest.mark.parametrize(
    ("match", "policy", "ai", "expected"),
    [
        (None, Policy(), False, ("needs_review", "model")),
        ("fake", Policy(), False, ("auto_flagged", "bank_match:fake")),
        ("fake", Policy(), True, ("auto_flagged", "bank_match:fake")),
        ("real", Policy(), False, ("auto_passed", "bank_match:real")),
        ("real", Policy(), True, ("auto_flagged", "provenance:ai_generated")),  # not the bank
        ("fake", Policy(on_fake="review"), False, ("needs_review", "bank_match:fake")),
        ("fake", Policy(on_fake="ignore"), False, ("needs_review", "model")),
        ("real", Policy(on_real="review"), False, ("needs_review", "bank_match:real")),
        ("real", Policy(on_real="ignore"), False, ("needs_review", "model")),
    ],
)
def test_decide_with_signals(
    match: str | None, policy: Policy, ai: bool, expected: tuple[str, str]
) -> None:
    assert (
        decide_with_signals(
            model_decision="needs_review",
            match_verdict=match,
            policy=policy,
            provenance={"manifest": "valid", "ai_generated": True} if ai else None,
            provenance_policy="trusted",
        )
        == expected
    )


def test_hash_text_is_checked() -> None:
    assert normalize_hex(" " + "AB" * 32 + "\n") == "ab" * 32
    assert hamming("0" * 64, "f" + "0" * 63) == 4
    with pytest.raises(InvalidHash, match="expected 64 hexadecimal characters"):
        normalize_hex("xyz")


def test_undecodable_video_has_no_hash_and_raises_nothing() -> None:
    assert video_hash(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, max_seconds=10) is None
    assert video_hash(b"GIF89a garbage", max_seconds=10) is None

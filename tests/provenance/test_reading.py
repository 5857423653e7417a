"""Reading C2PA manifests from real signed files: states, fields, formats, broken, hostile input."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation import provenance
from moderation.provenance import ProvenanceLimits, might_carry_manifest, read_provenance
from moderation.settings import load_settings
from tests.fixtures.media import image_bytes
from tests.provenance.signing import Chain, corrupt_manifest, make_chain, sign
from tests.video.media import colour_frames, encode

MIMES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@pytest.fixture()
def trusting(anchors_file: Path) -> ProvenanceLimits:
    return ProvenanceLimits.from_settings(
        load_settings(environ={}, c2pa_trust_anchors=str(anchors_file))
    )


@pytest.mark.parametrize("fmt", list(MIMES))
def test_image_declaring_ai__valid_with_every_field(
    fmt: str, chain: Chain, trusting: ProvenanceLimits
) -> None:
    signed = sign(image_bytes(fmt=fmt), MIMES[fmt], chain)
    report = read_provenance(signed, trusting)
    assert report is not None
    assert report["manifest"] == "valid"
    assert report["ai_generated"] is True
    assert report["digital_source_type"] == "trainedAlgorithmicMedia"
    assert report["claim_generator"] == "TestGen 1.0"
    assert report["signer"] == {"common_name": "Test Generator", "issuer": "dfmod tests"}
    assert (report["signature_valid"], report["hard_binding_valid"]) == (True, True)
    assert report["validation_codes"] == [] and report["error"] is None


@pytest.mark.parametrize("fmt", ["mp4", "mov"])
def test_video_declaring_ai__valid(fmt: str, chain: Chain, trusting: ProvenanceLimits) -> None:
    mime = {"mp4": "video/mp4", "mov": "video/quicktime"}[fmt]
    signed = sign(encode(colour_frames(6), fmt=fmt), mime, chain)
    report = read_provenance(signed, trusting)
    assert report is not None and report["manifest"] == "valid" and report["ai_generated"]


def test_signer_not_among_anchors__untrusted(stranger: Chain, trusting: ProvenanceLimits) -> None:
    report = read_provenance(sign(image_bytes(fmt="JPEG"), "image/jpeg", stranger), trusting)
    assert report is not None
    assert report["manifest"] == "untrusted"
    assert (report["signature_valid"], report["hard_binding_valid"]) == (True, True)
    assert report["validation_codes"] == ["signingCredential.untrusted"]
    assert report["signer"]["common_name"] == "Someone Else"


def test_no_anchors_configured__every_signer_untrusted(chain: Chain) -> None:
    report = read_provenance(sign(image_bytes(fmt="JPEG"), "image/jpeg", chain), ProvenanceLimits())
    assert report is not None and report["manifest"] == "untrusted"


@pytest.mark.parametrize(
    ("source_type", "ai"),
    [
        ("compositeWithTrainedAlgorithmicMedia", True),
        ("digitalCapture", False),
        ("algorithmicMedia", False),
    ],
)
def test_source_types(source_type: str, ai: bool, chain: Chain, trusting: ProvenanceLimits) -> None:
    signed = sign(image_bytes(fmt="JPEG"), "image/jpeg", chain, source_type=source_type)
    report = read_provenance(signed, trusting)
    assert report is not None
    assert report["digital_source_type"] == source_type and report["ai_generated"] is ai


def test_corrupted_manifest__invalid(chain: Chain, trusting: ProvenanceLimits) -> None:
    report = read_provenance(
        corrupt_manifest(sign(image_bytes(fmt="JPEG"), "image/jpeg", chain)), trusting
    )
    assert report is not None and report["manifest"] == "invalid" and report["error"]


def test_pixels_changed_after_signing__hard_binding_fails(
    chain: Chain, trusting: ProvenanceLimits
) -> None:
    signed = bytearray(sign(image_bytes(fmt="JPEG"), "image/jpeg", chain))
    signed[-20] ^= 0xFF  # inside the entropy-coded image data, which the data hash covers
    report = read_provenance(bytes(signed), trusting)
    assert report is not None
    assert report["manifest"] == "invalid"
    assert report["signature_valid"] is True and report["hard_binding_valid"] is False
    assert "assertion.dataHash.mismatch" in report["validation_codes"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_no_manifest__none_without_calling_c2pa(
    fmt: str, trusting: ProvenanceLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("c2pa must not be asked about a file without a manifest")

    monkeypatch.setattr(provenance, "_read", never)
    assert read_provenance(image_bytes(fmt=fmt), trusting) is None
    assert read_provenance(encode(colour_frames(3)), trusting) is None


def test_stripped_to_the_box__c2pa_says_none(chain: Chain, trusting: ProvenanceLimits) -> None:
    # An APP11 JUMBF segment that is no C2PA manifest store: the walk says maybe, c2pa says none.
    jpeg = image_bytes(fmt="JPEG")
    segment = b"JP\x00\x01" + b"\x00" * 12
    fake = jpeg[:2] + b"\xff\xeb" + (len(segment) + 2).to_bytes(2, "big") + segment + jpeg[2:]
    assert might_carry_manifest(fake)
    report = read_provenance(fake, trusting)
    assert report is None or report["manifest"] == "invalid"


def test_slow_read__invalid_timeout_and_the_scoring_goes_on(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(data: bytes, limits: ProvenanceLimits) -> None:
        release.wait(10)

    monkeypatch.setattr(provenance, "_read", stuck)
    try:
        report = read_provenance(
            sign(image_bytes(fmt="JPEG"), "image/jpeg", chain), ProvenanceLimits(timeout_s=0.2)
        )
    finally:
        release.set()
    assert report is not None and (report["manifest"], report["error"]) == ("invalid", "timeout")


def test_manifest_over_the_size_limit__invalid(chain: Chain) -> None:
    signed = sign(image_bytes(fmt="JPEG"), "image/jpeg", chain)
    report = read_provenance(signed, ProvenanceLimits(max_manifest_mb=0))
    assert report is not None and (report["manifest"], report["error"]) == ("invalid", "too_large")


def test_unreadable_anchors_file__logged_and_nothing_trusted(tmp_path: Path) -> None:
    missing = load_settings(environ={}, c2pa_trust_anchors=str(tmp_path / "missing.pem"))
    assert ProvenanceLimits.from_settings(missing).trust_anchors == ""
    (tmp_path / "junk.pem").write_text("not a certificate")
    junk = load_settings(environ={}, c2pa_trust_anchors=str(tmp_path / "junk.pem"))
    assert ProvenanceLimits.from_settings(junk).trust_anchors == ""


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=256),
    st.sampled_from(
        [
            b"\xff\xd8\xff",
            b"\x89PNG\r\n\x1a\n",
            b"RIFF\x00\x00\x00\x00WEBP",
            b"\x00\x00\x00\x18ftypisom",
            b"",
        ]
    ),
)
def test_header_walk_never_raises_on_garbage(tail: bytes, head: bytes) -> None:
    assert might_carry_manifest(head + tail) in (True, False)


@functools.cache
def _signed_jpeg() -> bytes:
    return sign(image_bytes(fmt="JPEG"), "image/jpeg", make_chain())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_damaged_signed_file__never_raises(data: st.DataObject) -> None:
    signed = _signed_jpeg()
    at = data.draw(st.integers(0, len(signed) - 1))
    cut = data.draw(st.booleans())
    damaged = signed[:at] if cut else signed[:at] + bytes([signed[at] ^ 0x5A]) + signed[at + 1 :]
    report = read_provenance(damaged, ProvenanceLimits())
    assert report is None or report["manifest"] in ("valid", "untrusted", "invalid")


def test_bad_media_corpus__never_raises() -> None:
    from tests.reliability.input_corpus import build_corpus

    for case in build_corpus():
        report = read_provenance(case.data, ProvenanceLimits())
        assert report is None or report["manifest"] == "invalid", case
